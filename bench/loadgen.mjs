// Heavy healthy write load: 1 MiB writes into a 64 MiB file, fdatasync after
// each, until SIGTERM; then prints {"bytes":N,"seconds":S} and exits.
import fs from 'node:fs';

const file = process.argv[2];
const chunk = Buffer.alloc(1 << 20, 0x5a);
const slots = 64;
const fd = fs.openSync(file, 'w');
const started = performance.now();
let bytes = 0;
let stop = false;
process.on('SIGTERM', () => {
  stop = true;
});
const loop = () => {
  for (let i = 0; i < 8 && !stop; i++) {
    fs.writeSync(fd, chunk, 0, chunk.length, (bytes / chunk.length % slots) * chunk.length);
    fs.fdatasyncSync(fd);
    bytes += chunk.length;
  }
  if (stop) {
    fs.closeSync(fd);
    process.stdout.write(`${JSON.stringify({bytes, seconds: (performance.now() - started) / 1000})}\n`);
    process.exit(0);
  }
  setImmediate(loop);
};
loop();
