import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {encodeMessage} from '../../src/heartbeat';
import type {Heartbeat} from '../../src/heartbeat';
import {readSnapshot} from '../../src/state';
import {FifoWriter} from '../../src/transport';
import {HELPER, Proc, ebsmon, ebsmonOnce, scrubbedEnv, tcpTry} from '../helpers/proc';
import {LoopVolume, Teardown, createNetRig, foreignRules, inNs, isRoot, requireRoot, sh, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';

const PORT = 7000;
const SEED_V4 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:CUSTOM - [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp --dport 9999 -j CUSTOM
-A CUSTOM -p tcp -j ACCEPT
-A OUTPUT -p udp --dport 53 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p tcp --dport 8888 -j REDIRECT --to-ports 7000
COMMIT
`;
const SEED_V6 = SEED_V4.replace(/\*nat[\s\S]*$/, '');

describe('ebsmon monitor: real fencing inside network namespaces', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let dir: string;
  let cleanupDir: () => Promise<void>;
  let teardown: Teardown;
  let rig: NetRig;
  let volume: LoopVolume;
  let server: Proc;
  let before0: string;
  const procs: Array<Proc> = [];
  let fifo: string;
  let stateDir: string;

  before(async () => {
    ({path: dir, cleanup: cleanupDir} = await tmpDir({unsafeCleanup: true}));
    teardown = new Teardown(dir);
    rig = createNetRig(teardown);
    volume = LoopVolume.create(dir, teardown);
    sh(['mkdir', path.join(volume.mountpoint, 'www')]);
    sh(inNs(rig.srv, ['iptables-restore']), {input: SEED_V4});
    sh(inNs(rig.srv, ['ip6tables-restore']), {input: SEED_V6});
    before0 = foreignRules(rig.srv);
    server = new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']}));
    procs.push(server);
    await waitFor('the server', () => server.stdout.includes('listening'));
    fifo = path.join(dir, 'run', 'ebsmon.fifo');
    stateDir = path.join(dir, 'run');
  });

  after(async () => {
    volume?.thaw();
    for (const proc of procs.reverse())
      await proc.stop();
    teardown?.dispose();
    await cleanupDir?.();
  });

  const startMonitor = (extra: Array<string> = [], env?: NodeJS.ProcessEnv) => {
    const proc = ebsmon(['monitor', `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--timeout=2', '--recover=2', '--log-level=debug', ...extra], {ns: rig.srv, env});
    procs.push(proc);
    return proc;
  };
  const startReporter = () => {
    const proc = ebsmon(['report', `--monitor=${path.join(volume.mountpoint, 'www')}`, `--ports=${PORT}`, `--fifo=${fifo}`, '--interval=0.2', '--probe-timeout=0.5']);
    procs.push(proc);
    return proc;
  };
  const snapshot = () => {
    try {
      return readSnapshot(stateDir);
    } catch {
      return null;
    }
  };
  const stateOf = (name: string) => snapshot()?.reporters.find(r => r.name === name)?.state;
  const rules = (tool = 'iptables') => sh(inNs(rig.srv, [tool, '-S', 'EBSMON']), {allowFail: true});
  const ready = (monitor: Proc) => waitFor('the monitor', () => monitor.logs().some(l => l.message === 'monitor running'));
  const synthetic = (name: string, ports: Array<number>, pid = 4242): Heartbeat => ({v: 1, kind: 'heartbeat', name, pid, ports, interval: 1, probeTimeout: 0.5, seq: 1, sentAt: Date.now(), probeMs: 1});
  const send = (line: Buffer) => {
    const writer = new FifoWriter(fifo);
    const result = writer.send(line);
    writer.close();
    assert.ok(result.ok, JSON.stringify(result));
  };

  it('fences a frozen volume\'s port for remote IPv4 and IPv6 clients only, cuts connections, and lifts after recovery', async (t: TestContext) => {
    requireRoot(t);
    const monitor = startMonitor();
    await ready(monitor);
    const reporter = startReporter();
    await waitFor('the reporter to be healthy', () => stateOf('www') === 'healthy');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, PORT), 'ok');
    assert.equal(await tcpTry(rig.cli, rig.srvV6, PORT), 'ok');
    assert.equal(foreignRules(rig.srv), before0);
    assert.match(sh(inNs(rig.srv, ['iptables', '-S', 'INPUT'])).split('\n')[1] ?? '', /ebsmon:jump/, 'jump at position 1');

    const talker = new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('holder.mjs'), rig.srvV4, String(PORT), 'talk'], {stdio: ['ignore', 'pipe', 'pipe']}));
    const idle = new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('holder.mjs'), rig.srvV6, String(PORT), 'idle'], {stdio: ['ignore', 'pipe', 'pipe']}));
    procs.push(talker, idle);
    await waitFor('both connections answered', () => talker.stdout.includes('pong') && idle.stdout.includes('pong'));

    volume.freeze();
    try {
      await waitFor('the fence', () => stateOf('www') === 'fenced');
      assert.match(rules(), /--dport 7000 -m comment --comment "?ebsmon:www"? -j REJECT --reject-with tcp-reset/);
      assert.match(rules('ip6tables'), /--dport 7000 .*ebsmon:www/);
      assert.equal(await tcpTry(rig.cli, rig.srvV4, PORT), 'refused');
      assert.equal(await tcpTry(rig.cli, rig.srvV6, PORT), 'refused');
      assert.equal(await tcpTry(rig.srv, '127.0.0.1', PORT), 'ok', 'loopback still reaches the service');
      assert.equal(await tcpTry(rig.srv, '::1', PORT), 'ok');
      await waitFor('the talking connection reset', () => /reset|closed/.test(talker.stdout));
      await waitFor('the idle connection closed', () => /reset|closed/.test(idle.stdout));
      assert.equal(foreignRules(rig.srv), before0, 'foreign rules untouched during the fence');
    } finally {
      volume.thaw();
    }
    await waitFor('the fence lifted', () => stateOf('www') === 'healthy');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, PORT), 'ok');
    assert.equal(await tcpTry(rig.cli, rig.srvV6, PORT), 'ok');
    assert.equal(foreignRules(rig.srv), before0, 'foreign rules untouched after');
    assert.doesNotMatch(rules(), /ebsmon:www/);

    await reporter.stop();
    await monitor.stop();
    assert.equal(monitor.exitCode, 0);
  });

  it('a monitor killed with -9 while fencing: the successor keeps the fence until heartbeats resume', async (t: TestContext) => {
    requireRoot(t);
    const first = startMonitor();
    await ready(first);
    const reporter = startReporter();
    await waitFor('healthy', () => stateOf('www') === 'healthy');
    volume.freeze();
    try {
      await waitFor('the fence', () => stateOf('www') === 'fenced');
      first.kill('SIGKILL');
      await first.exited;
      assert.match(rules(), /ebsmon:www/);
      const second = startMonitor();
      let dropped = false;
      const watch = async (untilDone: () => boolean) => {
        while (!untilDone()) {
          if (!/ebsmon:www/.test(rules()))
            dropped = true;
          await new Promise(resolve => setTimeout(resolve, 20));
        }
      };
      await watch(() => second.logs().some(l => l.message === 'monitor running'));
      // Past the successor's fresh --timeout too: the reporter is still silent.
      const until = Date.now() + 3_000;
      await watch(() => Date.now() > until);
      assert.equal(dropped, false, 'the fence never dropped');
      assert.equal(stateOf('www'), 'fenced');
      assert.equal(await tcpTry(rig.cli, rig.srvV4, PORT), 'refused');
      volume.thaw();
      await waitFor('the fence lifted by the successor', () => stateOf('www') === 'healthy');
      assert.equal(await tcpTry(rig.cli, rig.srvV4, PORT), 'ok');
      await second.stop();
    } finally {
      volume.thaw();
      await reporter.stop();
    }
  });

  it('survives hostile FIFO input: no fence of a healthy reporter, no port 22, no forged goodbye, no command run', async (t: TestContext) => {
    requireRoot(t);
    const monitor = startMonitor();
    await ready(monitor);
    const reporter = startReporter();
    await waitFor('healthy', () => stateOf('www') === 'healthy');
    send(encodeMessage(synthetic('ghost', [7001])));
    await waitFor('ghost fenced', () => stateOf('ghost') === 'fenced');

    const marker = '/tmp/x';
    fs.rmSync(marker, {force: true});
    const writer = new FifoWriter(fifo);
    const raw = (text: string | Buffer) => writer.send(Buffer.isBuffer(text) ? text : Buffer.from(text));
    raw('garbage without newline');
    raw('\n');
    for (let i = 0; i < 50; i++)
      raw(Buffer.alloc(4096, 0x41));
    raw('\n');
    raw(Buffer.from([0, 1, 2, 0xff, 0x0a]));
    raw(`${JSON.stringify({...synthetic('x', [80]), name: '"; touch /tmp/x; "'})}\n`);
    raw(`${JSON.stringify({...synthetic('x', [80]), name: '$(id)'})}\n`);
    raw(encodeMessage(synthetic('sshgrab', [22])));
    raw(encodeMessage({v: 1, kind: 'goodbye', name: 'ghost', pid: 4242}));
    raw(encodeMessage({v: 1, kind: 'goodbye', name: 'www', pid: 1}));
    writer.close();

    await waitFor('the refusals logged', () => monitor.logs().some(l => /goodbye for ghost refused: it is fenced/.test(String(l.message))) && monitor.logs().some(l => /protected port\(s\) 22/.test(String(l.message))));
    await waitFor('sshgrab fenced (with no port)', () => stateOf('sshgrab') === 'fenced');
    assert.ok(monitor.running);
    assert.equal(stateOf('www'), 'healthy');
    assert.equal(stateOf('ghost'), 'fenced');
    assert.equal(fs.existsSync(marker), false);
    assert.doesNotMatch(`${rules()}${rules('ip6tables')}`, /dport 22\b/);
    assert.ok((snapshot()?.monitor.linesRejected.name ?? 0) >= 2);
    assert.ok((snapshot()?.monitor.linesRejected.oversize ?? 0) >= 1);

    const unblocked = await ebsmonOnce(['unblock', '--all', `--fifo=${fifo}`, `--state-dir=${stateDir}`]);
    assert.equal(unblocked.code, 0, unblocked.stderr);
    await reporter.stop();
    await monitor.stop();
  });

  it('puts back rules flushed behind its back, and retries a broken iptables until it works', async (t: TestContext) => {
    requireRoot(t);
    const bin = path.join(dir, 'bin');
    fs.mkdirSync(bin, {recursive: true});
    for (const tool of ['iptables-restore', 'ip6tables-restore'])
      fs.writeFileSync(path.join(bin, tool), '#!/bin/sh\necho "broken on purpose" >&2\nexit 4\n', {mode: 0o755});
    const monitor = startMonitor(['--protect-ports='], scrubbedEnv({PATH: `${bin}:${process.env.PATH}`}));
    await waitFor('the failure logged', () => monitor.logs().some(l => /firewall update failed \(iptables-restore\): exit 4: broken on purpose; retrying/.test(String(l.message))));
    assert.ok(monitor.running);
    for (const tool of ['iptables-restore', 'ip6tables-restore'])
      fs.writeFileSync(path.join(bin, tool), `#!/bin/sh\nexec /usr/sbin/${tool} "$@"\n`, {mode: 0o755});
    await ready(monitor);
    send(encodeMessage(synthetic('flushme', [7002])));
    await waitFor('flushme fenced', () => stateOf('flushme') === 'fenced' && /ebsmon:flushme/.test(rules()));

    sh(inNs(rig.srv, ['iptables', '-F', 'EBSMON']));
    sh(inNs(rig.srv, ['iptables', '-D', 'INPUT', '-m', 'comment', '--comment', 'ebsmon:jump', '-j', 'EBSMON']));
    await waitFor('the rule and the jump back', () => /ebsmon:flushme/.test(rules()) && /ebsmon:jump/.test(sh(inNs(rig.srv, ['iptables', '-S', 'INPUT']))), 15_000);
    assert.ok(monitor.logs().some(l => /changed behind its back/.test(String(l.message))));
    await monitor.stop();
  });
});
