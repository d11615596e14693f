// One client attempt from the client namespace. Prints one word:
// ok (connected and answered), refused (RST to the SYN), timeout, or error:CODE.
import net from 'node:net';

const [host, portText] = process.argv.slice(2);
const socket = net.connect({host, port: Number(portText)});
const finish = word => {
  process.stdout.write(`${word}\n`);
  socket.destroy();
  process.exit(0);
};
const timer = setTimeout(() => finish('timeout'), 3000);
socket.on('connect', () => socket.write('ping\n'));
socket.on('data', () => {
  clearTimeout(timer);
  finish('ok');
});
socket.on('error', error => {
  clearTimeout(timer);
  finish(error.code === 'ECONNREFUSED' ? 'refused' : `error:${error.code}`);
});
