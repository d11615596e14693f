// A service whose answer comes late, as a database's does when its disk hangs
// mid-commit and resumes: on every port given, it answers each line it reads
// with "late\n", DELAY ms after reading it. Usage: late.mjs DELAY PORT...
import net from 'node:net';

const [delayText, ...portTexts] = process.argv.slice(2);
let listening = 0;
for (const port of portTexts.map(Number)) {
  const server = net.createServer(socket => {
    socket.on('error', () => {});
    socket.on('data', () => setTimeout(() => socket.write('late\n', () => {}), Number(delayText)));
  });
  server.listen({port, host: '::', ipv6Only: false}, () => {
    listening += 1;
    if (listening === portTexts.length)
      process.stdout.write('listening\n');
  });
}
process.on('SIGTERM', () => process.exit(0));
