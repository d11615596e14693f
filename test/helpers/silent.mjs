// A dual-stack TCP service that accepts and never answers: its clients send a
// query and wait, as a database's do when its disk hangs.
// Usage: silent.mjs FIRST_PORT [PORTS=1]. Prints "listening" once every port is.
import net from 'node:net';

const [firstText, countText = '1'] = process.argv.slice(2);
const first = Number(firstText);
const count = Number(countText);
let listening = 0;
for (let port = first; port < first + count; port++) {
  const server = net.createServer(socket => socket.on('error', () => {}));
  server.listen({port, host: '::', ipv6Only: false, backlog: 1024}, () => {
    listening += 1;
    if (listening === count)
      process.stdout.write('listening\n');
  });
}
process.on('SIGTERM', () => process.exit(0));
