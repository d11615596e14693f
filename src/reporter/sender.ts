import {encodeMessage} from '../heartbeat';
import type {Message} from '../heartbeat';
import {RateLimitedLog} from '../log';
import type {Logger} from '../log';
import {FifoWriter} from '../transport';
import type {SendResult} from '../transport';

/**
 * The reporter's side of the FIFO: one line a write, never blocking. A
 * message that cannot be delivered (no monitor, a full pipe) is dropped: said
 * once per kind of failure, then as a reminder at most once per `reminderMs`;
 * the first delivery after that is said too.
 */
export class Sender {
  private readonly writer: FifoWriter;
  /** Why the last send failed, or null while sends succeed. */
  private failure: string | null = null;
  private readonly limited: RateLimitedLog;

  constructor(readonly fifo: string, private readonly logger: Logger, reminderMs: number) {
    this.writer = new FifoWriter(fifo);
    this.limited = new RateLimitedLog(logger, reminderMs);
  }

  send(message: Message): SendResult {
    const result = this.writer.send(encodeMessage(message));
    if (result.ok) {
      if (this.failure !== null) {
        this.logger.info('monitor reachable again: heartbeats are being delivered', {fifo: this.fifo});
        this.failure = null;
        this.limited.forget('send');
      }
    } else {
      if (this.failure !== result.reason)
        this.limited.forget('send');
      this.failure = result.reason;
      this.limited.log('warn', 'send', `${message.kind} dropped: ${result.detail}`, {reason: result.reason});
    }
    return result;
  }

  close(): void {
    this.writer.close();
  }
}
