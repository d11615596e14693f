import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {CHECK_OUTPUT_MAX, Checker, foldOutput, resolveCheck, splitCommandLine} from '../../src/probe';
import {SpawnHelper} from '../../src/spawn';
import {processState, waitFor} from '../helpers/rig';

describe('--check command lines: split as a shell splits, nothing expanded', () => {
  const table: Array<[string, Array<string>]> = [
    ['mysqladmin --socket=/run/mysqld/mysqld.sock ping', ['mysqladmin', '--socket=/run/mysqld/mysqld.sock', 'ping']],
    ['  curl   -fsS  http://localhost/health ', ['curl', '-fsS', 'http://localhost/health']],
    [`psql -c 'select 1; select 2'`, ['psql', '-c', 'select 1; select 2']],
    ['echo "a \\"quoted\\" word" \\$HOME', ['echo', 'a "quoted" word', '$HOME']],
    ['printf %s $(id) `id` ~ *', ['printf', '%s', '$(id)', '`id`', '~', '*']],
    [`x '' ""`, ['x', '', '']],
    ['a\\ b c', ['a b', 'c']],
  ];
  for (const [text, words] of table) {
    it(text, () => {
      assert.deepEqual(splitCommandLine(text), words);
    });
  }

  it('refuses an unclosed quote, a lone backslash and an empty line', () => {
    assert.throws(() => splitCommandLine(`psql -c 'select`), /a single quote is not closed/);
    assert.throws(() => splitCommandLine('echo "x'), /a double quote is not closed/);
    assert.throws(() => splitCommandLine('echo \\'), /lone backslash/);
    assert.throws(() => splitCommandLine('   '), /no program given/);
  });
});

describe('--check programs found at start-up', () => {
  let dir: string;
  let cleanup: () => Promise<void>;

  before(async () => {
    ({path: dir, cleanup} = await tmpDir({unsafeCleanup: true}));
    fs.writeFileSync(path.join(dir, 'ok'), '#!/bin/sh\nexit 0\n', {mode: 0o755});
    fs.writeFileSync(path.join(dir, 'plain'), '#!/bin/sh\nexit 0\n', {mode: 0o644});
    fs.mkdirSync(path.join(dir, 'sub'));
  });

  after(async () => {
    await cleanup();
  });

  it('an absolute path, or a name found in PATH, resolved to the file it runs', () => {
    assert.deepEqual(resolveCheck(`${dir}/ok --flag`), {text: `${dir}/ok --flag`, argv: [`${dir}/ok`, '--flag']});
    assert.deepEqual(resolveCheck('ok a', `/nonexistent:${dir}`), {text: 'ok a', argv: [`${dir}/ok`, 'a']});
  });

  it('says why a program cannot be run', () => {
    assert.deepEqual(resolveCheck(`${dir}/plain`), {error: `${dir}/plain is not executable`});
    assert.deepEqual(resolveCheck(`${dir}/missing`), {error: `${dir}/missing does not exist`});
    assert.deepEqual(resolveCheck(`${dir}/sub`), {error: `${dir}/sub is not a regular file`});
    assert.deepEqual(resolveCheck('plain', dir), {error: `plain is not an executable in PATH (${dir})`});
    assert.deepEqual(resolveCheck(`'${dir}/ok`), {error: 'a single quote is not closed'});
  });
});

describe('a check\'s output in a reason', () => {
  it('both streams, whitespace folded', () => {
    assert.equal(foldOutput('mysqld is alive\n', ''), 'mysqld is alive');
    assert.equal(foldOutput('', 'mysqladmin: connect to server at \'localhost\' failed\nerror: \'Can\'t connect\'\n'), 'mysqladmin: connect to server at \'localhost\' failed error: \'Can\'t connect\'');
    assert.equal(foldOutput('out', 'err'), 'out / err');
  });

  it('at most 4 KiB of UTF-8, never a character cut in two', () => {
    assert.equal(Buffer.byteLength(foldOutput('x'.repeat(1 << 20), '')), CHECK_OUTPUT_MAX);
    const folded = foldOutput('\u00e9'.repeat(5000), '');
    assert.ok(Buffer.byteLength(folded) <= CHECK_OUTPUT_MAX);
    assert.ok(!folded.includes('\uFFFD'));
    assert.ok(folded.endsWith('\u00e9\u2026'));
  });
});

describe('Checker through the spawn helper: one run at a time, killed with its process group', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let helper: SpawnHelper;

  before(async () => {
    ({path: dir, cleanup} = await tmpDir({unsafeCleanup: true}));
    helper = SpawnHelper.start(path.join(dir, 'spawn'));
  });

  after(async () => {
    helper.close();
    await cleanup();
  });

  const checker = (text: string, timeoutMs = 5000) => {
    const spec = resolveCheck(text);
    assert.ok(!('error' in spec));
    return new Checker(spec, timeoutMs, (argv, options) => helper.run(argv, options), {GREETING: 'hello'});
  };

  it('exit 0 is healthy; any other exit is a reason with its output and the reporter\'s environment reaches it', async () => {
    assert.deepEqual(Object.keys(await checker('true').run()), ['ok', 'ms']);
    const failed = await checker('sh -c \'echo "$GREETING from the service"; echo down >&2; exit 3\'').run();
    assert.equal(failed.ok, false);
    assert.equal(!failed.ok && failed.reason, 'check `sh -c \'echo "$GREETING from the service"; echo down >&2; exit 3\'` exited 3: hello from the service / down');
    assert.equal(!failed.ok && failed.status, 'exit 3');
  });

  it('killed at its deadline with everything it started, and busy until it is gone', async () => {
    const pids = path.join(dir, 'pids');
    const slow = checker(`sh -c 'sleep 100 & echo $! $$ > ${pids}; wait'`, 500);
    const outcome = slow.run();
    assert.ok(slow.busy);
    await assert.rejects(slow.run(), /already in flight/, 'never stacked');
    const result = await outcome;
    assert.equal(!result.ok && result.reason, `check \`sh -c 'sleep 100 & echo $! $$ > ${pids}; wait'\` timed out after 0.5 s (killed with its process group)`);
    const [child, shell] = fs.readFileSync(pids, 'utf8').trim().split(' ').map(Number);
    // Dead: gone, or a zombie waiting for init to reap it (the shell's child is reparented).
    await waitFor('the check and its child killed', () => !slow.busy && [child!, shell!].every(pid => [null, 'Z'].includes(processState(pid))), 5_000);
  });
});
