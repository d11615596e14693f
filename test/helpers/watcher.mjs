// Connects to HOST:PORT over and over (one attempt at a time per port, no
// pause) and prints each change of outcome as a JSON line:
// {"state":"ok"|"refused"|"error:CODE","t":ms} (with "port" when several are
// watched: PORT may be a comma-separated list, all watched from this process).
// t is wall-clock milliseconds with sub-millisecond precision.
import net from 'node:net';

const [host, portsText] = process.argv.slice(2);
const ports = portsText.split(',').map(Number);
const now = () => performance.timeOrigin + performance.now();
const last = new Map();
const report = (port, state) => {
  if (last.get(port) !== state) {
    last.set(port, state);
    process.stdout.write(`${JSON.stringify(ports.length === 1 ? {state, t: now()} : {port, state, t: now()})}\n`);
  }
};
const attempt = port => {
  const socket = net.connect({host, port});
  const timer = setTimeout(() => socket.destroy(new Error('timeout')), 1000);
  socket.once('connect', () => {
    clearTimeout(timer);
    socket.destroy();
    report(port, 'ok');
    setImmediate(() => attempt(port));
  });
  socket.once('error', error => {
    clearTimeout(timer);
    report(port, error.code === 'ECONNREFUSED' ? 'refused' : `error:${error.code ?? error.message}`);
    setImmediate(() => attempt(port));
  });
};
process.on('SIGTERM', () => process.exit(0));
for (const port of ports)
  attempt(port);
