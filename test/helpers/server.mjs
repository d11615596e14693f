// A dual-stack TCP service for the namespace rig: answers "pong\n" to every line.
import net from 'node:net';

const port = Number(process.argv[2]);
const server = net.createServer(socket => {
  socket.on('error', () => {});
  socket.on('data', () => socket.write('pong\n'));
});
server.listen({port, host: '::', ipv6Only: false}, () => process.stdout.write('listening\n'));
process.on('SIGTERM', () => process.exit(0));
