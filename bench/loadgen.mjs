// Heavy healthy write load until SIGTERM; then prints {"bytes":N,"seconds":S} and exits.
//   loadgen.mjs FILE            1 MiB writes into a 64 MiB file, fdatasync after each (a log writer)
//   loadgen.mjs FILE MIB        MIB MiB of buffered 1 MiB writes, then one fdatasync, again and again
//                               (a checkpoint: a burst of dirty pages flushed at once)
import fs from 'node:fs';

const file = process.argv[2];
const burst = Number(process.argv[3] ?? 1);
const chunk = Buffer.alloc(1 << 20, 0x5a);
const slots = Math.max(64, burst);
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
    bytes += chunk.length;
    if ((bytes / chunk.length) % burst === 0)
      fs.fdatasyncSync(fd);
  }
  if (stop) {
    fs.closeSync(fd);
    process.stdout.write(`${JSON.stringify({bytes, seconds: (performance.now() - started) / 1000})}\n`);
    process.exit(0);
  }
  setImmediate(loop);
};
loop();
