import {spawn} from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {LineDecoder, encodeMessage} from '../../src/heartbeat';
import type {Heartbeat, Message} from '../../src/heartbeat';
import {FifoWriter, ensureFifo, openFifoReader} from '../../src/transport';
import {HELPER, Proc} from '../helpers/proc';
import {waitFor} from '../helpers/rig';

function reader(fifo: string) {
  const messages: Array<Message> = [];
  const rejected: Array<string> = [];
  const decoder = new LineDecoder({onMessage: m => messages.push(m), onReject: r => rejected.push(r.reason)});
  const handle = openFifoReader(fifo, chunk => decoder.push(chunk));
  return {messages, rejected, decoder, close: () => handle.close()};
}

const beat = (name: string, seq: number): Heartbeat => ({v: 1, kind: 'heartbeat', name, pid: process.pid, ports: [80], interval: 1, probeTimeout: 3, seq, sentAt: Date.now(), probeMs: 1});

describe('FIFO transport on a real mkfifo', () => {
  it('creates the FIFO 0600 in a 0700 directory, and refuses what is not a private FIFO', async () => {
    const {path: dir, cleanup} = await tmpDir({unsafeCleanup: true});
    try {
      const fifo = path.join(dir, 'run', 'ebsmon.fifo');
      ensureFifo(fifo);
      assert.ok(fs.statSync(fifo).isFIFO());
      assert.equal(fs.statSync(fifo).mode & 0o777, 0o600);
      assert.equal(fs.statSync(path.dirname(fifo)).mode & 0o777, 0o700);
      ensureFifo(fifo);
      fs.chmodSync(fifo, 0o622);
      assert.throws(() => ensureFifo(fifo), /writable by others/);
      const file = path.join(dir, 'plain');
      fs.writeFileSync(file, '');
      assert.throws(() => ensureFifo(file), /is not a FIFO/);
    } finally {
      await cleanup();
    }
  });

  it('a writer with no reader is told at once, and delivers once a reader appears', async (t: TestContext) => {
    const {path: dir, cleanup} = await tmpDir({unsafeCleanup: true});
    try {
      const fifo = path.join(dir, 'f');
      const writer = new FifoWriter(fifo);
      assert.equal(writer.send(encodeMessage(beat('a', 1))).ok === false && 'no-fifo', 'no-fifo');
      ensureFifo(fifo);
      const result = writer.send(encodeMessage(beat('a', 1)));
      assert.equal(!result.ok && result.reason, 'no-reader');
      const r = reader(fifo);
      // Closed even when an assertion fails: an open reader keeps the test process alive.
      t.after(() => r.close());
      assert.deepEqual(writer.send(encodeMessage(beat('a', 2))), {ok: true});
      await waitFor('the heartbeat', () => r.messages.length === 1);
      writer.close();
    } finally {
      await cleanup();
    }
  });

  it('keeps reading as writers come and go, and recovers from garbage', async (t: TestContext) => {
    const {path: dir, cleanup} = await tmpDir({unsafeCleanup: true});
    try {
      const fifo = path.join(dir, 'f');
      ensureFifo(fifo);
      const r = reader(fifo);
      t.after(() => r.close());
      for (let i = 1; i <= 5; i++) {
        const writer = new FifoWriter(fifo);
        assert.ok(writer.send(encodeMessage(beat(`w${i}`, i))).ok);
        writer.close();
        await waitFor(`message ${i}`, () => r.messages.length === i);
      }
      const fd = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      fs.writeSync(fd, Buffer.from('abc'));
      const big = Buffer.alloc(200 * 1024, 0x7a);
      for (let off = 0; off < big.length;) {
        try {
          off += fs.writeSync(fd, big, off, Math.min(4096, big.length - off));
        } catch {
          await new Promise(resolve => setImmediate(resolve));
        }
      }
      fs.writeSync(fd, Buffer.from([0x0a, 0x00, 0xff, 0x13, 0x0a]));
      fs.writeSync(fd, encodeMessage(beat('after-garbage', 1)));
      fs.closeSync(fd);
      await waitFor('the valid heartbeat after garbage', () => r.messages.some(m => m.kind === 'heartbeat' && m.name === 'after-garbage'));
      assert.deepEqual(r.rejected, ['oversize', 'malformed']);
    } finally {
      await cleanup();
    }
  });

  it('50 writer processes x 500 heartbeats: every line decodes, none interleaved, most are sent and the reader gets exactly those', async (t: TestContext) => {
    const {path: dir, cleanup} = await tmpDir({unsafeCleanup: true});
    try {
      const fifo = path.join(dir, 'f');
      ensureFifo(fifo);
      const r = reader(fifo);
      t.after(() => r.close());
      const writers = Array.from({length: 50}, (_, i) => new Proc(spawn(process.execPath, ['--import', 'tsx', HELPER('writer.ts'), fifo, `writer-${i}`, '500'], {stdio: ['ignore', 'pipe', 'pipe']})));
      await Promise.all(writers.map(w => w.exited));
      const reports = writers.map(w => JSON.parse(w.stdout) as {sent: number, dropped: Record<string, number>, sentSeqs: Array<[number, number]>});
      const sent = reports.reduce((n, rep) => n + rep.sent, 0);
      // A writer drops a line only while the pipe is full (50 writers in bursts against one
      // reader); one that drops most, or claims lines it never wrote, is broken.
      assert.ok(sent >= (50 * 500) / 2, `at least half the lines sent: ${sent}`);
      for (const report of reports)
        assert.deepEqual(Object.keys(report.dropped).filter(reason => reason !== 'pipe-full'), [], 'dropped only for a full pipe');
      await waitFor('every delivered line', () => r.messages.length >= sent);
      assert.equal(r.messages.length, sent);
      assert.deepEqual(r.rejected, []);
      for (const [i, report] of reports.entries()) {
        const seqs = r.messages.filter(m => m.kind === 'heartbeat' && m.name === `writer-${i}`).map(m => (m as Heartbeat).seq);
        const written = report.sentSeqs.flatMap(([first, last]) => Array.from({length: last - first + 1}, (_, k) => first + k));
        assert.deepEqual(seqs, written, `writer-${i}: the reader got exactly the lines written, in order`);
      }
    } finally {
      await cleanup();
    }
  });
});
