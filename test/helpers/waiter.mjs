// Clients that each send a query and wait for an answer that never comes.
// Usage: waiter.mjs HOST FIRST_PORT [PORTS=1] [PER_PORT=1] [LOCAL_ADDRESS].
// Prints "connected N" once all N are connected, then one line per connection
// that ends: "reset PORT NS" (ECONNRESET), "closed PORT NS" (FIN), or
// "error:CODE PORT NS" (ECONNABORTED: the socket was destroyed on this host),
// NS being CLOCK_MONOTONIC nanoseconds (process.hrtime), the clock every
// process on the host shares.
import net from 'node:net';

const [host, firstText, portsText = '1', perPortText = '1', localAddress] = process.argv.slice(2);
const first = Number(firstText);
const total = Number(portsText) * Number(perPortText);
let connected = 0;
const lines = [];
let scheduled = false;
// Thousands of ends at once: one write per turn, so the output's own cost stays out of the times.
const say = text => {
  lines.push(text);
  if (!scheduled) {
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      process.stdout.write(lines.splice(0).join(''));
    });
  }
};
for (let port = first; port < first + Number(portsText); port++) {
  for (let i = 0; i < Number(perPortText); i++) {
    const socket = net.connect({host, port, ...(localAddress === undefined ? {} : {localAddress})});
    let ended = false;
    const end = word => {
      if (ended)
        return;
      ended = true;
      say(`${word} ${port} ${process.hrtime.bigint()}\n`);
    };
    socket.on('connect', () => {
      socket.write('query\n');
      connected += 1;
      if (connected === total)
        say(`connected ${total}\n`);
    });
    socket.on('error', error => end(error.code === 'ECONNRESET' ? 'reset' : `error:${error.code}`));
    socket.on('end', () => end('closed'));
  }
}
setTimeout(() => process.exit(0), 600_000).unref();
process.on('SIGTERM', () => process.exit(0));
