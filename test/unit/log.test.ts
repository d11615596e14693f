import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {LogSink} from '../../src/log';

describe('LogSink: log output never blocks the loop and never grows without bound', () => {
  let dir: string;
  let cleanup: () => Promise<void>;

  before(async () => {
    ({path: dir, cleanup} = await tmpDir({unsafeCleanup: true}));
  });

  after(async () => {
    await cleanup();
  });

  it('into a pipe nobody reads (journald stuck): the loop keeps ticking, the queue stays bounded, drops are reported once it reads', async () => {
    const fifo = path.join(dir, 'stderr.fifo');
    spawnSync('mkfifo', [fifo]);
    // We hold the read end and do not read: the pipe fills, and writes to it would block.
    const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const writer = fs.openSync(fifo, fs.constants.O_WRONLY);
    const sink = new LogSink({fd: writer}, dropped => `dropped ${dropped}`, 64 * 1024);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const line = Buffer.from(`${'x'.repeat(99)}\n`);
    for (let i = 0; i < 50_000; i++)
      sink.write(line);
    await new Promise(resolve => setTimeout(resolve, 300));
    clearInterval(timer);
    assert.ok(ticks >= 10, `the loop ran while 5 MB waited for a blocked pipe (${ticks} ticks)`);
    assert.ok(process.memoryUsage().heapUsed < 200 * 1024 * 1024);

    // The reader wakes up: what is left comes out, led by how many lines were dropped.
    let out = '';
    const chunk = Buffer.alloc(1 << 16);
    const deadline = Date.now() + 10_000;
    while (!/dropped \d+/.test(out) && Date.now() < deadline) {
      try {
        const n = fs.readSync(reader, chunk, 0, chunk.length, null);
        out += chunk.subarray(0, n).toString('utf8');
      } catch {
        await new Promise(resolve => setTimeout(resolve, 10));
      }
    }
    const dropped = Number(/dropped (\d+)/.exec(out)?.[1]);
    assert.ok(dropped > 40_000, `most of 50 000 lines dropped, and said so (${dropped})`);
    await sink.drain(1_000);
    fs.closeSync(reader);
    fs.closeSync(writer);
  });

  it('into a file: everything written, in order, and reopened on request', async () => {
    const file = path.join(dir, 'log.txt');
    const sink = new LogSink({path: file}, () => '');
    for (let i = 0; i < 1_000; i++)
      sink.write(`line ${i}\n`);
    await sink.drain(5_000);
    fs.renameSync(file, `${file}.1`);
    sink.reopen();
    sink.write('after reopen\n');
    await new Promise(resolve => setTimeout(resolve, 100));
    await sink.drain(5_000);
    assert.equal(fs.readFileSync(`${file}.1`, 'utf8'), Array.from({length: 1_000}, (_, i) => `line ${i}\n`).join(''));
    assert.equal(fs.readFileSync(file, 'utf8'), 'after reopen\n');
  });
});
