// A FIFO writer process for transport tests: sends N heartbeats as NAME (seq 1..N)
// through the real FifoWriter and prints, at the end,
// {"sent":N,"dropped":{reason:count},"sentSeqs":[[first,last],...]}: the seqs it
// was told were written, as runs, so a test can check the reader got those lines.
// BATCH (default 1) lines go in one write, staying within PIPE_BUF (atomic).
import {encodeMessage} from '../../src/heartbeat';
import {FifoWriter} from '../../src/transport';

const [fifo, name, countText, batchText] = process.argv.slice(2);
const count = Number(countText);
const batch = Number(batchText ?? 1);
const writer = new FifoWriter(fifo!);
const dropped: Record<string, number> = {};
const sentSeqs: Array<[number, number]> = [];
let sent = 0;
for (let seq = 1; seq <= count; seq += batch) {
  const lines: Array<Buffer> = [];
  for (let i = seq; i < seq + batch && i <= count; i++)
    lines.push(encodeMessage({v: 1, kind: 'heartbeat', name: name!, pid: process.pid, ports: [3306, 33060], interval: 1, probeTimeout: 3, seq: i, sentAt: Date.now(), probeMs: 2.5}));
  const result = writer.send(lines.length === 1 ? lines[0]! : Buffer.concat(lines));
  if (result.ok) {
    sent += lines.length;
    const lastRun = sentSeqs.at(-1);
    if (lastRun !== undefined && lastRun[1] === seq - 1)
      lastRun[1] = seq + lines.length - 1;
    else
      sentSeqs.push([seq, seq + lines.length - 1]);
  } else {
    dropped[result.reason] = (dropped[result.reason] ?? 0) + lines.length;
  }
}
writer.close();
process.stdout.write(`${JSON.stringify({sent, dropped, sentSeqs})}\n`);
