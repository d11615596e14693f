import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import {Driver, Waiters, cutters, gone, inMs, ms, nowNs} from '../helpers/cutter';
import {HELPER, Proc} from '../helpers/proc';
import {createNetRig, inNs, isRoot, requireRoot, sh, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';
import {useScratch} from '../helpers/suite';

const BASE = 7600;
/** Listened on in both namespaces: the target of this host's own outgoing connections. */
const OUT_PORT = BASE + 9;
const CLI_V6 = 'fd00:e65::2';
/** Ports cut in one batch too large for the kernel-side filter (over 32): the cutter filters a whole dump itself. */
const WIDE = 7650;
const WIDE_PORTS = 40;
/** A reset may come a little before the deadline only by the clocks' rounding; after it, within a loaded machine's bound. */
const EARLY_MS = 50;
const LATE_MS = 2_000;

/** The peers of established connections whose local (sport) or remote (dport) port is `port`, as `ss` prints them. */
function peers(ns: string, side: 'sport' | 'dport', port: number): Array<string> {
  const out = sh(inNs(ns, ['ss', '-Htn', 'state', 'established', `( ${side} = :${port} )`]));
  return out.split('\n').filter(Boolean).map(line => line.trim().split(/\s+/)[3]!.replace(/:\d+$/, '')).sort();
}

/** The connection's one end: `word` (reset, error:ECONNABORTED), not before the deadline and within a loaded machine's bound after it. */
async function endsAtDeadline(w: Waiters, deadline: bigint, word: string): Promise<void> {
  const [end] = await waitFor(`the connection ended (${word})`, () => w.ends().length > 0 && w.ends(), 10_000);
  assert.equal(end!.word, word);
  const afterMs = ms(end!.ns - deadline);
  assert.ok(afterMs > -EARLY_MS && afterMs < LATE_MS, `${word} ${afterMs.toFixed(1)} ms after the deadline`);
}

describe('socket cutter: a resident process destroys waiting connections at each deadline', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let rig: NetRig;
  let driver: Driver;
  const scratch = useScratch();
  const track = <T extends {proc: Proc}>(thing: T): T => {
    scratch.track(thing.proc);
    return thing;
  };
  const spawnDir = (name: string) => path.join(scratch.dir, name);

  before(async () => {
    scratch.first(() => {
      for (const pid of cutters)
        if (!gone(pid))
          process.kill(pid, 'SIGKILL');
    });
    rig = createNetRig(scratch.teardown);
    const servers = [
      scratch.track(new Proc(spawn('ip', inNs(rig.srv, [process.execPath, HELPER('silent.mjs'), String(BASE), '10']).slice(1), {stdio: ['ignore', 'pipe', 'pipe']}))),
      scratch.track(new Proc(spawn('ip', inNs(rig.srv, [process.execPath, HELPER('silent.mjs'), String(WIDE), String(WIDE_PORTS)]).slice(1), {stdio: ['ignore', 'pipe', 'pipe']}))),
      scratch.track(new Proc(spawn('ip', inNs(rig.cli, [process.execPath, HELPER('silent.mjs'), String(OUT_PORT)]).slice(1), {stdio: ['ignore', 'pipe', 'pipe']}))),
    ];
    await waitFor('the silent servers', () => servers.every(s => s.stdout.includes('listening')));
    driver = track(Driver.start(rig.srv, spawnDir('spawn-1')));
  });

  it('warms up: destroy=ok on this kernel, its memory locked, nothing open but its pipes and three sockets', async (t: TestContext) => {
    if (!requireRoot(t))
      return;
    const ready = await driver.ready();
    assert.deepEqual({supported: ready.supported, detail: ready.detail, warnings: ready.warnings}, {supported: true, detail: null, warnings: []});
    const status = fs.readFileSync(`/proc/${ready.pid}/status`, 'utf8');
    const locked = Number(/^VmLck:\s+(\d+) kB/m.exec(status)?.[1]);
    const resident = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]);
    // All of it but the kernel's [vdso] pages, which mlockall leaves alone.
    assert.ok(resident > 0 && resident - locked <= 16, `its resident memory locked: VmLck ${locked} kB, VmRSS ${resident} kB`);
    assert.equal(fs.readFileSync(`/proc/${ready.pid}/cmdline`, 'utf8').split('\0').slice(0, 2).join(' '), 'perl -e');

    const fds = Object.fromEntries(fs.readdirSync(`/proc/${ready.pid}/fd`).map(fd => [fd, fs.readlinkSync(`/proc/${ready.pid}/fd/${fd}`)]));
    const dir = spawnDir('spawn-1');
    assert.match(fds['0']!, new RegExp(`^${dir}/\\d+\\.in$`));
    assert.match(fds['1']!, new RegExp(`^${dir}/\\d+\\.out$`));
    assert.equal(fds['2'], fds['1']);
    const others = Object.entries(fds).filter(([fd]) => Number(fd) > 2).map(([, target]) => target);
    // Pipes without close-on-exec that whoever started the test holds are inherited by every process it starts; not the cutter's own.
    const sockets = others.filter(target => !target.startsWith('pipe:')).map(target => /^socket:\[(\d+)\]$/.exec(target)?.[1]);
    assert.equal(sockets.length, 3, `fds: ${JSON.stringify(fds)}`);
    // The inode column of /proc/net/netlink (the 10th) and /proc/net/unix (the 7th), as seen from its namespace.
    const inodes = (file: string, column: number) => fs.readFileSync(`/proc/${ready.pid}/net/${file}`, 'utf8').split('\n').slice(1).filter(Boolean).map(line => line.trim().split(/\s+/)[column]);
    const netlink = inodes('netlink', 9);
    const unix = inodes('unix', 6);
    assert.deepEqual(sockets.map(inode => netlink.includes(inode) ? 'netlink' : unix.includes(inode) ? 'unix' : 'other').sort(), ['netlink', 'netlink', 'unix']);
  });

  it('cuts the remote clients waiting on a port at its deadline (IPv4, IPv6); spares loopback, this host\'s own address, a port re-armed before it and a cleared one', async (t: TestContext) => {
    if (!requireRoot(t))
      return;
    await driver.ready();
    const [A, B, C] = [BASE, BASE + 1, BASE + 2];
    const remote4 = track(Waiters.start(rig.cli, rig.srvV4, A));
    const remote6 = track(Waiters.start(rig.cli, rig.srvV6, A));
    const spared = [
      track(Waiters.start(rig.srv, '127.0.0.1', A)),
      // Loopback, but not an address of any interface (lo holds 127.0.0.1/8).
      track(Waiters.start(rig.srv, '127.0.0.1', A, {localAddress: '127.0.0.2'})),
      track(Waiters.start(rig.srv, '::1', A)),
      track(Waiters.start(rig.srv, rig.srvV4, A)),
      track(Waiters.start(rig.cli, rig.srvV4, B)),
      track(Waiters.start(rig.cli, rig.srvV4, C)),
    ];
    for (const w of [remote4, remote6, ...spared])
      await w.connected();

    const deadline = inMs(1_500);
    for (const port of [A, B, C])
      await driver.arm('in', port, deadline);
    // Written separately, so the cutter itself replaces B's deadline and drops C's.
    await driver.arm('in', B, inMs(120_000));
    await driver.send({clear: 'in', port: C});
    assert.ok(nowNs() < deadline, 'the re-arm and the clear were written before the deadline');

    const cut = await driver.cut('in', A);
    assert.equal(cut.sockets, 2);
    for (const w of [remote4, remote6])
      await endsAtDeadline(w, deadline, 'reset');
    // Destroyed sockets are gone when the cut line is printed: what ss shows now is what was spared.
    assert.deepEqual(peers(rig.srv, 'sport', A), ['[::1]', '[::ffff:10.213.0.1]', '[::ffff:127.0.0.1]', '[::ffff:127.0.0.2]']);
    assert.deepEqual(peers(rig.srv, 'sport', B), ['[::ffff:10.213.0.2]']);
    assert.deepEqual(peers(rig.srv, 'sport', C), ['[::ffff:10.213.0.2]']);
    assert.equal(driver.events().some(e => e.cut !== undefined && e.cut.port !== A), false, 'only A was cut');
    for (const w of spared)
      assert.deepEqual(w.ends(), []);
  });

  it('out PORT: cuts this host\'s own connections to a remote port at its deadline, not one to loopback', async (t: TestContext) => {
    if (!requireRoot(t))
      return;
    await driver.ready();
    const out4 = track(Waiters.start(rig.srv, rig.cliV4, OUT_PORT));
    const out6 = track(Waiters.start(rig.srv, CLI_V6, OUT_PORT));
    const loopback = track(Waiters.start(rig.srv, '127.0.0.1', OUT_PORT));
    for (const w of [out4, out6, loopback])
      await w.connected();
    const deadline = inMs(1_000);
    await driver.arm('out', OUT_PORT, deadline);
    const cut = await driver.cut('out', OUT_PORT);
    assert.equal(cut.sockets, 2);
    // Destroyed here: this host's client reads ECONNABORTED; the remote end gets the reset.
    for (const w of [out4, out6])
      await endsAtDeadline(w, deadline, 'error:ECONNABORTED');
    assert.deepEqual(peers(rig.srv, 'dport', OUT_PORT), ['127.0.0.1']);
    assert.deepEqual(peers(rig.cli, 'sport', OUT_PORT), []);
  });

  it('cuts at once when told to, 40 ports in one batch (filtered here, not in the kernel), loopback spared', async (t: TestContext) => {
    if (!requireRoot(t))
      return;
    await driver.ready();
    const remote = track(Waiters.start(rig.cli, rig.srvV6, WIDE, {perPort: 3}));
    const last = track(Waiters.start(rig.cli, rig.srvV4, WIDE + WIDE_PORTS - 1));
    const loopback = track(Waiters.start(rig.srv, '::1', WIDE + 1));
    for (const w of [remote, last, loopback])
      await w.connected();
    const asked = nowNs();
    await driver.send({cutNow: 'in', port: WIDE, count: WIDE_PORTS});
    assert.equal((await driver.cut('in', WIDE)).sockets, 3);
    assert.equal((await driver.cut('in', WIDE + WIDE_PORTS - 1)).sockets, 1);
    assert.equal((await driver.cut('in', WIDE + 1)).sockets, 0);
    const ends = await waitFor('four resets', () => remote.ends().length + last.ends().length === 4 && [...remote.ends(), ...last.ends()], 10_000);
    for (const end of ends) {
      assert.equal(end.word, 'reset');
      assert.ok(ms(end.ns - asked) < LATE_MS);
    }
    assert.deepEqual(peers(rig.srv, 'sport', WIDE + 1), ['[::1]']);
  });

  it('with its monitor frozen and not reading, it still cuts: output that does not fit the pipe is dropped', async (t: TestContext) => {
    if (!requireRoot(t))
      return;
    await driver.ready();
    const port = BASE + 4;
    const waiting = track(Waiters.start(rig.cli, rig.srvV4, port));
    await waiting.connected();
    // 5000 lines of "cut in 2xxxx 0" are more than a pipe holds (64 KiB).
    const flood = inMs(1_000);
    await driver.send({armMany: 'in', port: 20_000, count: 5_000, atNs: String(flood)});
    const deadline = flood + 500_000_000n;
    await driver.arm('in', port, deadline);
    driver.proc.kill('SIGSTOP');
    try {
      await endsAtDeadline(waiting, deadline, 'reset');
    } finally {
      driver.proc.kill('SIGCONT');
    }
  });

  it('with its monitor dead (its stdin closed, the spawn helper gone) a pending deadline still cuts, then it exits', async (t: TestContext) => {
    if (!requireRoot(t))
      return;
    const first = await driver.ready();
    const port = BASE + 5;
    const waiting = track(Waiters.start(rig.cli, rig.srvV4, port));
    await waiting.connected();
    const orphan = track(Driver.start(rig.srv, spawnDir('spawn-2')));
    const ready = await orphan.ready();
    // The new cutter took over the namespace's handover name: the previous one is gone.
    await waitFor('the previous cutter gone', () => gone(first.pid), 10_000);
    const deadline = inMs(2_000);
    await orphan.arm('in', port, deadline);
    orphan.proc.kill('SIGKILL');
    await waitFor('the spawn helper gone', () => gone(ready.helperPid), 10_000);
    assert.ok(!gone(ready.pid), 'the cutter outlives its monitor and the spawn helper');
    assert.ok(nowNs() < deadline, 'the monitor died before the deadline');
    await endsAtDeadline(waiting, deadline, 'reset');
    await waitFor('the cutter exited with nothing left to cut', () => gone(ready.pid), 10_000);
  });

  it('a new cutter takes over from a dead monitor\'s: the old one exits and its deadline cuts nothing', async (t: TestContext) => {
    if (!requireRoot(t))
      return;
    const [old, fresh] = [BASE + 6, BASE + 7];
    const oldClient = track(Waiters.start(rig.cli, rig.srvV4, old));
    const freshClient = track(Waiters.start(rig.cli, rig.srvV4, fresh));
    await oldClient.connected();
    await freshClient.connected();
    const dead = track(Driver.start(rig.srv, spawnDir('spawn-3')));
    const deadReady = await dead.ready();
    const oldDeadline = inMs(5_000);
    await dead.arm('in', old, oldDeadline);
    dead.proc.kill('SIGKILL');
    await waitFor('the spawn helper gone', () => gone(deadReady.helperPid), 10_000);

    driver = track(Driver.start(rig.srv, spawnDir('spawn-4')));
    await driver.ready();
    await waitFor('the old cutter gone', () => gone(deadReady.pid), 10_000);
    assert.ok(nowNs() < oldDeadline, 'it went before its deadline');
    // Past the old deadline, a cut on the new cutter: the old port's connection is still there.
    await driver.arm('in', fresh, oldDeadline + 300_000_000n);
    await driver.cut('in', fresh);
    assert.ok(nowNs() > oldDeadline);
    assert.deepEqual(peers(rig.srv, 'sport', old), ['[::ffff:10.213.0.2]']);
    assert.deepEqual(oldClient.ends(), []);
  });

  it('the handover name: another user can neither make the cutter exit nor keep one from starting', async (t: TestContext) => {
    if (!requireRoot(t))
      return;
    const {pid} = await driver.ready();
    // Python: Node's net cannot name an abstract unix socket.
    const asNobody = (ns: string, code: string) => scratch.track(new Proc(spawn('ip', inNs(ns, ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--', '/usr/bin/python3', '-c', code]).slice(1), {stdio: ['ignore', 'pipe', 'pipe']})));
    const knock = asNobody(rig.srv, [
      'import socket',
      's = socket.socket(socket.AF_UNIX)',
      's.connect("\\0ebsmon-cutter")',
      'print("connected", flush=True)',
      'print("closed" if s.recv(1) == b"" else "data", flush=True)',
    ].join('\n'));
    await waitFor('the cutter closed the stranger\'s connection', () => knock.stdout.includes('closed'), 10_000);
    assert.equal(knock.stdout, 'connected\nclosed\n');
    assert.ok(!gone(pid), 'the cutter is still running');

    const squatter = asNobody(rig.cli, [
      'import signal, socket',
      's = socket.socket(socket.AF_UNIX)',
      's.bind("\\0ebsmon-cutter")',
      's.listen(8)',
      'print("listening", flush=True)',
      'signal.pause()',
    ].join('\n'));
    await waitFor('the squatter listening', () => squatter.stdout.includes('listening'), 10_000);
    const other = track(Driver.start(rig.cli, spawnDir('spawn-5')));
    const ready = await other.ready();
    assert.equal(ready.supported, true);
    // The takeover comes once the monitor has handed it its deadlines: its word is an error line after ready.
    await waitFor('the squatter reported', () => other.events().some(e => e.error === 'handover: ebsmon-cutter is held by uid 65534, not by a cutter: started without handover'), 10_000);
    assert.deepEqual(ready.warnings, []);
    await other.send({quit: true});
    await waitFor('the other cutter gone', () => gone(ready.pid), 10_000);
  });

  it('after ready it execs nothing and touches no file (strace over three cuts)', async (t: TestContext) => {
    if (!requireRoot(t))
      return;
    const {pid} = await driver.ready();
    const port = BASE + 8;
    const waiting = track(Waiters.start(rig.cli, rig.srvV4, port, {perPort: 2}));
    const out = track(Waiters.start(rig.srv, rig.cliV4, OUT_PORT));
    await waiting.connected();
    await out.connected();
    assert.ok(fs.existsSync('/usr/bin/strace'), 'strace (Debian package strace) is installed by make test');
    const log = path.join(scratch.dir, 'strace.log');
    // %file: every call that takes a path (open, openat, stat, newfstatat, readlink, access, execve...); %process: fork, clone, exec, wait.
    const strace = scratch.track(new Proc(spawn('strace', ['-f', '-e', 'trace=%file,%process', '-o', log, '-p', String(pid)], {stdio: ['ignore', 'pipe', 'pipe']})));
    await waitFor('strace attached', () => /attached/.test(strace.stderr), 10_000);
    await driver.arm('in', port, inMs(200));
    await driver.cut('in', port);
    await driver.arm('out', OUT_PORT, inMs(100));
    await driver.cut('out', OUT_PORT);
    await driver.send({cutNow: 'in', port});
    await waitFor('the second cut of the port', () => driver.events().filter(e => e.cut?.kind === 'in' && e.cut.port === port).length === 2, 10_000);
    strace.kill('SIGINT');
    await strace.exited;
    assert.equal(fs.readFileSync(log, 'utf8'), '', 'no exec, no path');
    assert.ok(!gone(pid), 'still running after strace detached');
    assert.deepEqual(driver.events().filter(e => e.error !== undefined), []);
  });

  it('quit: it exits at once, pending deadlines dropped', async (t: TestContext) => {
    if (!requireRoot(t))
      return;
    const {pid} = await driver.ready();
    await driver.arm('in', BASE, inMs(60_000));
    await driver.send({quit: true});
    await waitFor('the cutter exited', () => gone(pid), 10_000);
    await waitFor('the driver told', () => driver.events().some(e => e.exit === 0), 10_000);
  });
});
