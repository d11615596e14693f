// A synthetic reporter: sends a heartbeat for NAME naming PORTS every INTERVAL
// ms to FIFO, as a reporter whose disk is fine would, and keeps going while no
// monitor reads (ENXIO, EPIPE: it reopens). Stopping it is the disk hanging.
// EXTRA, a JSON object, is merged into every heartbeat (e.g. {"isolate":[2379]}).
import fs from 'node:fs';

const [fifo, name, portsText, intervalText, extraText] = process.argv.slice(2);
const extra = extraText === undefined ? {} : JSON.parse(extraText);
const ports = portsText.split(',').map(Number);
const interval = Number(intervalText ?? 200);
let fd = null;
let seq = 0;
const send = () => {
  seq += 1;
  const line = `${JSON.stringify({v: 1, kind: 'heartbeat', name, pid: process.pid, ports, interval: interval / 1000, probeTimeout: 0.3, seq, sentAt: Date.now(), probeMs: 1, ...extra})}\n`;
  try {
    fd ??= fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    fs.writeSync(fd, line);
  } catch {
    if (fd !== null)
      fs.closeSync(fd);
    fd = null;
  }
};
send();
setInterval(send, interval);
process.on('SIGTERM', () => process.exit(0));
