// Holds one connection open from the client namespace and reports, one line
// each, what happens to it: "connected", then "pong" per answer, "reset"/"closed".
// Mode "talk" sends a line every 100 ms; mode "idle" sends one and waits, and
// sends one more on SIGUSR1 (printing "poked"): an idle pooled connection reused.
import net from 'node:net';

const [host, portText, mode] = process.argv.slice(2);
const socket = net.connect({host, port: Number(portText)});
let timer;
socket.on('connect', () => {
  process.stdout.write('connected\n');
  socket.write('ping\n');
  if (mode === 'talk')
    timer = setInterval(() => socket.write('ping\n'), 100);
});
process.on('SIGUSR1', () => {
  process.stdout.write('poked\n');
  socket.write('ping\n');
});
socket.on('data', () => process.stdout.write('pong\n'));
socket.on('error', error => {
  process.stdout.write(error.code === 'ECONNRESET' ? 'reset\n' : `error:${error.code}\n`);
  clearInterval(timer);
  process.exit(0);
});
socket.on('end', () => {
  process.stdout.write('closed\n');
  clearInterval(timer);
  process.exit(0);
});
setTimeout(() => process.exit(0), 120_000).unref();
