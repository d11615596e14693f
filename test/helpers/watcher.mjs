// Connects to HOST:PORT over and over (one attempt at a time, no pause) and
// prints each change of outcome as a JSON line: {"state":"ok"|"refused"|"error:CODE","t":ms}.
// t is wall-clock milliseconds with sub-millisecond precision.
import net from 'node:net';

const [host, portText] = process.argv.slice(2);
const now = () => performance.timeOrigin + performance.now();
let last = '';
const report = state => {
  if (state !== last) {
    last = state;
    process.stdout.write(`${JSON.stringify({state, t: now()})}\n`);
  }
};
const attempt = () => {
  const socket = net.connect({host, port: Number(portText)});
  const timer = setTimeout(() => socket.destroy(new Error('timeout')), 1000);
  socket.once('connect', () => {
    clearTimeout(timer);
    socket.destroy();
    report('ok');
    setImmediate(attempt);
  });
  socket.once('error', error => {
    clearTimeout(timer);
    report(error.code === 'ECONNREFUSED' ? 'refused' : `error:${error.code ?? error.message}`);
    setImmediate(attempt);
  });
};
process.on('SIGTERM', () => process.exit(0));
attempt();
