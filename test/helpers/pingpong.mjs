// N sequential round trips to HOST:PORT, each a new connection: connect,
// send a line, wait for the answer, close. Prints {"medianMs":M,"p99Ms":P}.
import net from 'node:net';

const [host, portText, countText] = process.argv.slice(2);
const count = Number(countText ?? 1000);
const times = [];
const once = () => new Promise((resolve, reject) => {
  const started = performance.now();
  const socket = net.connect({host, port: Number(portText)}, () => socket.write('ping\n'));
  socket.once('data', () => {
    times.push(performance.now() - started);
    socket.destroy();
    resolve();
  });
  socket.once('error', reject);
});
for (let i = 0; i < count; i++)
  await once();
times.sort((a, b) => a - b);
process.stdout.write(`${JSON.stringify({medianMs: times[Math.floor(times.length / 2)], p99Ms: times[Math.floor(times.length * 0.99)]})}\n`);
