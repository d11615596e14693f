import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {SpawnHelper} from '../../src/spawn';
import {alive, waitFor} from '../helpers/rig';

describe('SpawnHelper: processes started without the event loop waiting for an exec', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let helper: SpawnHelper;
  const errors: Array<string> = [];

  before(async () => {
    ({path: dir, cleanup} = await tmpDir({unsafeCleanup: true}));
    helper = SpawnHelper.start(path.join(dir, 'spawn'), message => errors.push(message));
  });

  after(async () => {
    helper.close();
    await cleanup();
  });

  it('runs a program with arguments as given (no shell), extra environment, stdin, and both outputs', async () => {
    const result = await helper.run(['sh', '-c', 'read line; echo "out:$line:$EXTRA:$1"; echo err >&2; exit 3', 'sh', '$(id) ; `x`'], {env: {EXTRA: 'a b'}, input: 'hello\n', timeoutMs: 10_000}).result;
    assert.deepEqual(result, {code: 3, signal: null, stdout: 'out:hello:a b:$(id) ; `x`\n', stderr: 'err\n', timedOut: false});
    assert.deepEqual(fs.readdirSync(path.join(dir, 'spawn')), [], 'its files are removed');
  });

  it('reports a missing program as a spawn error', async () => {
    const result = await helper.run(['/nonexistent/tool'], {timeoutMs: 10_000}).result;
    assert.match(result.spawnError ?? '', /No such file or directory/);
  });

  it('kills the whole process group at the deadline, and says it timed out', async () => {
    const pidFile = path.join(dir, 'grandchild.pid');
    const running = helper.run(['sh', '-c', `sleep 300 & echo $! > ${pidFile}; wait`], {timeoutMs: 300});
    const result = await running.result;
    assert.equal(result.timedOut, true);
    await running.exited;
    const grandchild = Number(fs.readFileSync(pidFile, 'utf8'));
    await waitFor('the grandchild gone', () => !alive(grandchild));
  });

  it('reports death by signal', async () => {
    const result = await helper.run(['sh', '-c', 'kill -TERM $$'], {timeoutMs: 10_000}).result;
    assert.equal(result.signal, 'SIGTERM');
    assert.equal(result.code, null);
  });

  it('streams: a long-lived child on FIFOs, stdout and stderr in order, killed on request', async () => {
    const child = helper.stream(['sh', '-c', 'while read line; do echo "got $line"; echo "warn $line" >&2; done']);
    let output = '';
    child.onData(chunk => {
      output += chunk.toString('utf8');
    });
    await child.ready;
    child.write('one\ntwo\n');
    await waitFor('both lines answered', () => output === 'got one\nwarn one\ngot two\nwarn two\n');
    const pid = child.pid()!;
    child.kill();
    await child.exited;
    assert.equal(alive(pid), false);
    await waitFor('its FIFOs removed', () => fs.readdirSync(path.join(dir, 'spawn')).length === 0);
  });

  it('runs several at once', async () => {
    const results = await Promise.all(Array.from({length: 20}, (_, i) => helper.run(['sh', '-c', `echo ${i}`], {timeoutMs: 10_000}).result));
    assert.deepEqual(results.map(r => r.stdout), Array.from({length: 20}, (_, i) => `${i}\n`));
    assert.deepEqual(errors, []);
  });

  it('takes its children with it when it goes (the monitor stopped or died)', async () => {
    const second = SpawnHelper.start(path.join(dir, 'spawn2'));
    const child = second.stream(['sleep', '300']);
    await child.ready;
    const pid = child.pid()!;
    second.close();
    await waitFor('the child gone', () => !alive(pid));
  });

  it('leaves a child that must outlive it running when it goes', async () => {
    const second = SpawnHelper.start(path.join(dir, 'spawn3'));
    const kept = second.stream(['sleep', '300'], {outlivesHelper: true});
    const taken = second.stream(['sleep', '300']);
    await Promise.all([kept.ready, taken.ready]);
    // Until setsid has run, the child is still a fork of the helper, in its process group.
    const ownSession = (pid: number) => fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[3] === String(pid);
    await waitFor('the kept child in a session of its own', () => ownSession(kept.pid()!));
    const helperPid = second.pid!;
    second.close();
    try {
      await waitFor('the helper and its ordinary child gone', () => !alive(helperPid) && !alive(taken.pid()!));
      assert.equal(alive(kept.pid()!), true);
    } finally {
      kept.kill();
    }
    await waitFor('the kept child ended', () => !alive(kept.pid()!));
  });
});
