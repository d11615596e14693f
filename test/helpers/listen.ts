import {LineDecoder} from '../../src/heartbeat';
import type {Heartbeat, Message} from '../../src/heartbeat';
import {ensureFifo, openFifoReader} from '../../src/transport';
import type {Proc} from './proc';

/** The test plays the monitor: it reads the FIFO with the real decoder. */
export function listen(fifo: string) {
  const messages: Array<Message> = [];
  ensureFifo(fifo);
  const decoder = new LineDecoder({onMessage: m => messages.push(m), onReject: () => {}});
  const handle = openFifoReader(fifo, chunk => decoder.push(chunk));
  const beats = () => messages.filter((m): m is Heartbeat => m.kind === 'heartbeat');
  return {messages, beats, close: () => handle.close()};
}

/** Whether a process has logged a message matching `re` (JSON logs on stderr). */
export function logged(proc: Proc, re: RegExp): boolean {
  return proc.logs().some(l => re.test(String(l.message)));
}

/** How many log messages match `re`, optionally only those about one watched path. */
export function countLogged(proc: Proc, re: RegExp, path?: string): number {
  return proc.logs().filter(l => re.test(String(l.message)) && (path === undefined || l.path === path)).length;
}
