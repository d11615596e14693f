// A FIFO writer process for transport tests: sends N heartbeats as NAME through
// the real FifoWriter and prints {"sent":N,"dropped":{reason:count}} at the end.
import {encodeMessage} from '../../src/heartbeat';
import {FifoWriter} from '../../src/transport';

const [fifo, name, countText] = process.argv.slice(2);
const count = Number(countText);
const writer = new FifoWriter(fifo!);
const dropped: Record<string, number> = {};
let sent = 0;
for (let seq = 1; seq <= count; seq++) {
  const line = encodeMessage({v: 1, kind: 'heartbeat', name: name!, pid: process.pid, ports: [3306, 33060], interval: 1, probeTimeout: 3, seq, sentAt: Date.now(), probeMs: 2.5});
  const result = writer.send(line);
  if (result.ok)
    sent += 1;
  else
    dropped[result.reason] = (dropped[result.reason] ?? 0) + 1;
}
writer.close();
process.stdout.write(`${JSON.stringify({sent, dropped})}\n`);
