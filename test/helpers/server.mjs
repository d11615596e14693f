// A dual-stack TCP service for the namespace rig: answers "pong\n" to every line,
// on every port given.
import net from 'node:net';

const ports = process.argv.slice(2).map(Number);
let listening = 0;
for (const port of ports) {
  const server = net.createServer(socket => {
    socket.on('error', () => {});
    socket.on('data', () => socket.write('pong\n'));
  });
  server.listen({port, host: '::', ipv6Only: false}, () => {
    listening += 1;
    if (listening === ports.length)
      process.stdout.write('listening\n');
  });
}
process.on('SIGTERM', () => process.exit(0));
