import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {PROBE_SCRIPT} from '../../src/probe/script';
import {Prober, failureReason, openFlags, parseProbeAnswer, probeRequest, proberArgv} from '../../src/probe';
import type {ProbeOutcome} from '../../src/probe';
import {SpawnHelper} from '../../src/spawn';
import {alive, waitFor} from '../helpers/rig';

describe('prober argv and requests', () => {
  const target = {dir: '/var/lib/my sql', name: 'mysql', dev: 66305n, ino: 12n};

  it('runs perl with nothing of the environment but PATH, the script from its file, and every value as its own argument (no shell)', () => {
    assert.deepEqual(proberArgv(target, '/dev/shm/ebsmon-report-mysql.1.x/probe.pl', '0', 4242, '/usr/bin:/bin'), ['env', '-i', 'PATH=/usr/bin:/bin', 'LC_ALL=C', 'perl', '/dev/shm/ebsmon-report-mysql.1.x/probe.pl',
      '/var/lib/my sql', '.ebsmon-probe-mysql', '66305', '12', '0', 'ebsmon probe name=mysql pid=4242', String(fs.constants.O_CREAT | fs.constants.O_EXCL), String(os.constants.errno.ENOENT), String(os.constants.errno.EEXIST)]);
  });

  it('asks with a sequence number and the open flags, one line each', () => {
    assert.equal(probeRequest(7, 'direct'), `7 ${openFlags('direct')}\n`);
    assert.equal(probeRequest(8, 'dsync'), `8 ${openFlags('dsync')}\n`);
  });

  it('opens without following links or blocking on a FIFO; O_DIRECT only for the direct method', () => {
    const c = fs.constants;
    for (const method of ['direct', 'dsync'] as const) {
      const flags = openFlags(method);
      for (const flag of [c.O_RDWR, c.O_NOFOLLOW, c.O_NONBLOCK, c.O_DSYNC])
        assert.equal(flags & flag, flag);
      assert.equal(flags & c.O_CREAT, 0, 'creating is a separate, O_EXCL, step');
      assert.equal((flags & c.O_DIRECT) !== 0, method === 'direct');
    }
  });
});

describe('prober answers', () => {
  it('reads what was found, created and the verdict of one request', () => {
    assert.deepEqual(parseProbeAnswer('found 1000 1 77 symlink\nmoved .ebsmon-probe-x.planted.42\ncreated 81\nok\n'), {
      events: [{kind: 'found', uid: 1000, links: 1, inode: '77', what: 'symlink'}, {kind: 'moved', to: '.ebsmon-probe-x.planted.42'}],
      created: '81',
      ok: true,
    });
    assert.deepEqual(parseProbeAnswer('stale 0 1 5 regular file\nmissing\n').events, [{kind: 'stale', uid: 0, links: 1, inode: '5', what: 'regular file'}, {kind: 'missing'}]);
  });

  it('turns an errno number into its name, and keeps the probe\'s own codes', () => {
    const answer = parseProbeAnswer(`fail write ${os.constants.errno.EIO} Input/output error\n`);
    assert.equal(answer.ok, false);
    assert.deepEqual(failureReason(answer.failure!), {code: 'EIO', reason: 'write: EIO: input/output error'});
    assert.deepEqual(failureReason({stage: 'open', code: String(os.constants.errno.EROFS), text: 'Read-only file system'}), {code: 'EROFS', reason: 'open: EROFS: read-only file system'});
    assert.deepEqual(failureReason({stage: 'pin', code: 'EXDEV', text: 'the probe file is on device 1, not the pinned device 2'}), {code: 'EXDEV', reason: 'pin: the probe file is on device 1, not the pinned device 2'});
  });

  it('ignores lines it does not know', () => {
    assert.deepEqual(parseProbeAnswer('hello\ncreated\nfail\n'), {events: [], ok: false});
  });
});

/**
 * The resident prober for real: perl through a spawn helper, in a directory
 * of this test's own (any user: the file is this user's). What the probe
 * must still find out on every request although the process lives on.
 */
describe('the resident prober', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let helper: SpawnHelper;
  let script: string;
  const probers: Array<Prober> = [];

  before(async () => {
    ({path: dir, cleanup} = await tmpDir({unsafeCleanup: true}));
    helper = SpawnHelper.start(path.join(dir, 'spawn'));
    script = path.join(dir, 'probe.pl');
    fs.writeFileSync(script, PROBE_SCRIPT);
  });

  after(async () => {
    for (const prober of probers)
      prober.abandon();
    helper.close();
    await cleanup();
  });

  /** A watched directory of its own, and a started prober with its exits recorded. */
  const start = (tag: string, timeoutMs = 5000) => {
    const watched = path.join(dir, tag);
    fs.mkdirSync(watched);
    const stat = fs.statSync(watched, {bigint: true});
    const prober = new Prober({dir: watched, name: 'unit', dev: stat.dev, ino: stat.ino}, timeoutMs, argv => helper.stream(argv), script);
    const exits: Array<number | null> = [];
    prober.start(code => exits.push(code));
    probers.push(prober);
    return {watched, prober, exits, file: path.join(watched, '.ebsmon-probe-unit')};
  };
  const ok = (outcome: ProbeOutcome) => {
    assert.equal(outcome.ok, true, JSON.stringify(outcome));
    return outcome;
  };

  it('one process answers request after request, writing the sequence number into its own file each time', async () => {
    const {prober, file} = start('steady');
    assert.deepEqual(ok(await prober.probe(0, 'direct')).events, undefined);
    const pid = prober.pid;
    const inode = fs.statSync(file).ino;
    assert.equal(prober.fileInode, String(inode));
    for (let seq = 1; seq <= 5; seq++) {
      ok(await prober.probe(seq, 'direct'));
      assert.match(fs.readFileSync(file, 'utf8'), new RegExp(`^ebsmon probe name=unit pid=${process.pid} seq=${seq}\\.+\\n$`));
    }
    assert.equal(prober.pid, pid, 'the same process');
    assert.equal(fs.statSync(file).ino, inode, 'the same file, rewritten in place');
    assert.equal(fs.statSync(file).size, 4096);
  });

  it('between requests holds nothing on the volume: no descriptor, no working directory there (remount ro and umount must work)', async () => {
    const {watched, prober} = start('idle');
    ok(await prober.probe(0, 'direct'));
    const pid = prober.pid!;
    // The perl itself (env execs it), once it answered.
    const fds = fs.readdirSync(`/proc/${pid}/fd`).map(fd => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        return '';
      }
    });
    assert.deepEqual(fds.filter(target => target.startsWith(watched)), []);
    assert.equal(fs.readlinkSync(`/proc/${pid}/cwd`), '/');
  });

  it('a file unlinked, renamed away or replaced between requests is never written again: "missing", or "found", and a new file', async () => {
    const {watched, prober, file} = start('moved');
    ok(await prober.probe(0, 'direct'));
    fs.rmSync(file);
    assert.deepEqual(ok(await prober.probe(1, 'direct')).events, [{kind: 'missing'}]);
    assert.match(fs.readFileSync(file, 'utf8'), /seq=1\./, 'a new file at the name');

    const aside = path.join(watched, 'aside');
    fs.renameSync(file, aside);
    assert.deepEqual(ok(await prober.probe(2, 'direct')).events, [{kind: 'missing'}]);
    assert.match(fs.readFileSync(aside, 'utf8'), /seq=1\./, 'the file renamed away kept what it had: not written through an old descriptor');

    // A file of the same user renamed over the probe name (rename(2) is atomic): found, removed, ours again.
    const planted = path.join(watched, 'planted');
    fs.writeFileSync(planted, 'not the probe\'s');
    fs.renameSync(planted, file);
    const events = ok(await prober.probe(3, 'direct')).events ?? [];
    assert.equal(events.length, 1);
    assert.equal(events[0]!.kind, 'found');
    assert.match(fs.readFileSync(file, 'utf8'), /seq=3\./);
  });

  it('a directory swapped for another since start-up: refused, nothing written in the new one', async () => {
    const {watched, prober} = start('swapped');
    ok(await prober.probe(0, 'direct'));
    fs.renameSync(watched, `${watched}.old`);
    fs.mkdirSync(watched);
    const outcome = await prober.probe(1, 'direct');
    assert.equal(!outcome.ok && outcome.code, 'EREPLACED');
    assert.match(!outcome.ok ? outcome.reason : '', /^pin: the directory is now device \d+ inode \d+, not the pinned device \d+ inode \d+$/);
    assert.deepEqual(fs.readdirSync(watched), []);
    fs.rmSync(watched, {recursive: true});
    fs.renameSync(`${watched}.old`, watched);
    ok(await prober.probe(2, 'direct'));
  });

  it('a replacement prober told the inode of the file before it keeps that file (no "stale")', async () => {
    const {watched, prober, file} = start('replaced');
    ok(await prober.probe(0, 'direct'));
    prober.abandon();
    const stat = fs.statSync(watched, {bigint: true});
    const next = new Prober({dir: watched, name: 'unit', dev: stat.dev, ino: stat.ino}, 5000, argv => helper.stream(argv), script, {fileInode: prober.fileInode});
    next.start(() => {});
    probers.push(next);
    assert.equal(ok(await next.probe(1, 'direct')).events, undefined);
    assert.match(fs.readFileSync(file, 'utf8'), /seq=1\./);
  });

  it('a request unanswered by its deadline is a timeout; abandoned, the process is killed and its exit reported', async () => {
    const {prober, exits} = start('stopped', 300);
    ok(await prober.probe(0, 'direct'));
    const pid = prober.pid!;
    // A prober that cannot answer (stopped, as one stuck in the kernel cannot).
    process.kill(pid, 'SIGSTOP');
    const outcome = await prober.probe(1, 'direct');
    assert.equal(!outcome.ok && outcome.reason, 'timed out after 0.3 s');
    prober.abandon();
    await waitFor('the abandoned prober gone', () => !alive(pid) && exits.length === 1, 10_000);
  });

  it('a prober that dies mid-request: the request fails at once with why, and the exit is reported', async () => {
    const {prober, exits} = start('killed', 10_000);
    ok(await prober.probe(0, 'direct'));
    const pid = prober.pid!;
    process.kill(pid, 'SIGSTOP');
    const pending = prober.probe(1, 'direct');
    process.kill(pid, 'SIGKILL');
    const outcome = await pending;
    assert.equal(!outcome.ok && outcome.code, 'EUNKNOWN');
    assert.match(!outcome.ok ? outcome.reason : '', /^probe: perl exited 137/);
    await waitFor('the exit reported', () => exits.length === 1);
    const again = await prober.probe(2, 'direct');
    assert.equal(!again.ok && again.code, 'ESPAWN', 'never asked again');
  });
});
