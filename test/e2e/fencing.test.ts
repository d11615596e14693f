import assert from 'node:assert/strict';
import {spawn, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, beforeEach, describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {encodeMessage} from '../../src/heartbeat';
import type {Heartbeat} from '../../src/heartbeat';
import {readSnapshot} from '../../src/state';
import {FifoWriter} from '../../src/transport';
import {HELPER, Proc, ebsmon, ebsmonOnce, reporterIn, scrubbedEnv, tcpTry} from '../helpers/proc';
import {BACKENDS, clearEbsmon, fencedFor, foreignRules, unfenced} from '../helpers/firewall';
import {EBSMON, LoopVolume, Teardown, createNetRig, inNs, isRoot, processState, requireRoot, sh, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';

const PORT = 7000;
/** Ports the test's server answers on besides PORT, so that a connect tells a fence (refused) from no fence (ok). */
const ALSO = [22, 7006, 7007];
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

/** `promtool check metrics`: Prometheus's own text-format parser and linter; '' when clean. */
function promtool(file: string): string {
  const result = spawnSync('promtool', ['check', 'metrics'], {input: fs.readFileSync(file), encoding: 'utf8'});
  assert.equal(result.error, undefined, 'promtool (Debian package prometheus) is installed by make test');
  return result.status === 0 ? '' : `exit ${result.status}: ${result.stdout}${result.stderr}`;
}

/** One sample's value from a metrics file, by its exact series name and labels. */
function sample(file: string, series: string): number | undefined {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  const line = text.split('\n').find(l => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

for (const backend of BACKENDS)
describe(`ebsmon monitor --firewall=${backend}: real fencing inside network namespaces`, {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
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
    before0 = foreignRules(backend, rig.srv);
    server = new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), String(PORT), ...ALSO.map(String)], {stdio: ['ignore', 'pipe', 'pipe']}));
    procs.push(server);
    await waitFor('the server', () => server.stdout.includes('listening'));
    fifo = path.join(dir, 'run', 'ebsmon.fifo');
    stateDir = path.join(dir, 'run');
  });
  beforeEach(() => {
    if (rig !== undefined)
      clearEbsmon(rig.srv);
  });

  after(async () => {
    volume?.thaw();
    for (const proc of procs.reverse())
      await proc.stop();
    teardown?.dispose();
    await cleanupDir?.();
  });

  const startMonitor = (extra: Array<string> = [], env?: NodeJS.ProcessEnv) => {
    const proc = ebsmon(['monitor', `--firewall=${backend}`, `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--timeout=2', '--recover=2', '--log-level=debug', ...extra], {ns: rig.srv, env});
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
  const stateOf = (name: string) => reporterIn(stateDir, name)?.state;
  const fenced = (name: string, port: number) => fencedFor(backend, rig.srv, name, port);
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
    assert.equal(foreignRules(backend, rig.srv), before0);
    if (backend === 'iptables')
      assert.match(sh(inNs(rig.srv, ['iptables', '-S', 'INPUT'])).split('\n')[1] ?? '', /ebsmon:jump/, 'jump at position 1');

    const talker = new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('holder.mjs'), rig.srvV4, String(PORT), 'talk'], {stdio: ['ignore', 'pipe', 'pipe']}));
    const idle = new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('holder.mjs'), rig.srvV6, String(PORT), 'idle'], {stdio: ['ignore', 'pipe', 'pipe']}));
    procs.push(talker, idle);
    await waitFor('both connections answered', () => talker.stdout.includes('pong') && idle.stdout.includes('pong'));

    volume.freeze();
    try {
      await waitFor('the fence', () => stateOf('www') === 'fenced');
      await waitFor('the fence in the kernel', () => fenced('www', PORT));
      if (backend === 'iptables')
        assert.match(sh(inNs(rig.srv, ['iptables', '-S', 'EBSMON'])), /--dport 7000 -m comment --comment "?ebsmon:www"? -j REJECT --reject-with tcp-reset/);
      assert.equal(await tcpTry(rig.cli, rig.srvV4, PORT), 'refused');
      assert.equal(await tcpTry(rig.cli, rig.srvV6, PORT), 'refused');
      assert.equal(await tcpTry(rig.srv, '127.0.0.1', PORT), 'ok', 'loopback still reaches the service');
      assert.equal(await tcpTry(rig.srv, '::1', PORT), 'ok');
      // The fence is for clients of this host's port 7000, not for this host's own connections out to a 7000 elsewhere.
      const remote = new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('server.mjs'), String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']}));
      procs.push(remote);
      await waitFor('a server on port 7000 elsewhere', () => remote.stdout.includes('listening'));
      assert.equal(await tcpTry(rig.srv, rig.cliV4, PORT), 'ok', 'the replies to an outgoing connection are not fenced');
      await remote.stop();
      await waitFor('the talking connection reset', () => /reset|closed/.test(talker.stdout));
      await waitFor('the idle connection closed', () => /reset|closed/.test(idle.stdout));
      assert.equal(foreignRules(backend, rig.srv), before0, 'foreign rules untouched during the fence');
    } finally {
      volume.thaw();
    }
    await waitFor('the fence lifted', () => stateOf('www') === 'healthy');
    await waitFor('the flap in metrics.prom', () => sample(path.join(stateDir, 'metrics.prom'), 'ebsmon_reporter_flaps_total{reporter="www"}') === 1);
    assert.equal(await tcpTry(rig.cli, rig.srvV4, PORT), 'ok');
    assert.equal(await tcpTry(rig.cli, rig.srvV6, PORT), 'ok');
    assert.equal(foreignRules(backend, rig.srv), before0, 'foreign rules untouched after');
    assert.ok(unfenced(backend, rig.srv, PORT), 'no rule left in either family');

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
      await waitFor('the fence', () => stateOf('www') === 'fenced' && fenced('www', PORT));
      first.kill('SIGKILL');
      await first.exited;
      assert.ok(fenced('www', PORT));
      const second = startMonitor();
      let dropped = false;
      const watch = (what: string, done: () => boolean) => waitFor(what, () => {
        if (!fenced('www', PORT))
          dropped = true;
        return done();
      }, 30_000, 20);
      await watch('the successor running', () => second.logs().some(l => l.message === 'monitor running'));
      const readyAt = Date.now();
      // Until the successor has run past its own --timeout (2 s) with the reporter still silent, as its pulse says.
      await watch('the successor\'s pulse past its --timeout', () => {
        const pulse = snapshot()?.monitor;
        return pulse?.pid === second.pid && pulse.writtenAt >= readyAt + 2_000 + 500;
      });
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
    // A careless --on-change program: it hands the reporter's name to a shell's eval. It runs
    // (its log shows ghost's fence), but no name ebsmon accepts can make it run a command.
    const marker = path.join(dir, 'injected');
    const hookLog = path.join(dir, 'careless-hook.log');
    const hook = path.join(dir, 'careless-hook.sh');
    fs.writeFileSync(hook, `#!/bin/sh\neval "echo $EBSMON_REPORTER $EBSMON_STATE" >> ${hookLog}\n`, {mode: 0o755});
    const monitor = startMonitor([`--on-change=${hook}`]);
    await ready(monitor);
    const reporter = startReporter();
    await waitFor('healthy', () => stateOf('www') === 'healthy');
    send(encodeMessage(synthetic('ghost', [7001])));
    await waitFor('ghost fenced', () => stateOf('ghost') === 'fenced');

    const writer = new FifoWriter(fifo);
    // 200 KB is more than a pipe holds: wait for room rather than drop (pipe-full).
    const raw = async (text: string | Buffer) => {
      while (!writer.send(Buffer.isBuffer(text) ? text : Buffer.from(text)).ok)
        await new Promise(resolve => setTimeout(resolve, 5));
    };
    await raw('garbage without newline');
    await raw('\n');
    for (let i = 0; i < 50; i++)
      await raw(Buffer.alloc(4096, 0x41));
    await raw('\n');
    await raw(Buffer.from([0, 1, 2, 0xff, 0x0a]));
    await raw(`${JSON.stringify({...synthetic('x', [80]), name: `"; touch ${marker}; "`})}\n`);
    await raw(`${JSON.stringify({...synthetic('x', [80]), name: `$(touch ${marker})`})}\n`);
    await raw(`${JSON.stringify({...synthetic('x', [80]), name: `x;touch ${marker}`})}\n`);
    await raw(encodeMessage(synthetic('sshgrab', [22])));
    await raw(encodeMessage({v: 1, kind: 'goodbye', name: 'ghost', pid: 4242}));
    await raw(encodeMessage({v: 1, kind: 'goodbye', name: 'www', pid: 1}));
    writer.close();

    await waitFor('the refusals logged', () => monitor.logs().some(l => /goodbye for ghost refused: it is fenced/.test(String(l.message))) && monitor.logs().some(l => /protected port\(s\) 22/.test(String(l.message))));
    await waitFor('sshgrab fenced (with no port)', () => stateOf('sshgrab') === 'fenced');
    // Sent after the hostile names: had any of them been taken, its fence (due first) would have run the hook by now.
    const hookSaw = () => (fs.existsSync(hookLog) ? fs.readFileSync(hookLog, 'utf8') : '');
    await waitFor('the hook run for ghost and sshgrab', () => /^ghost fenced$/m.test(hookSaw()) && /^sshgrab fenced$/m.test(hookSaw()));
    assert.ok(monitor.running);
    assert.equal(stateOf('www'), 'healthy');
    assert.equal(stateOf('ghost'), 'fenced');
    assert.equal(fs.existsSync(marker), false, 'no command from a name ran');
    assert.deepEqual(hookSaw().split('\n').filter(Boolean).sort(), ['ghost fenced', 'sshgrab fenced'], 'the hook ran for no other name');
    assert.ok(unfenced(backend, rig.srv, 22), 'port 22 in neither family');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, 22), 'ok');
    assert.equal(await tcpTry(rig.cli, rig.srvV6, 22), 'ok');
    assert.ok((snapshot()?.monitor.linesRejected.name ?? 0) >= 3);
    assert.ok((snapshot()?.monitor.linesRejected.oversize ?? 0) >= 1);

    const unblocked = await ebsmonOnce(['unblock', '--all', `--fifo=${fifo}`, `--state-dir=${stateDir}`]);
    assert.equal(unblocked.code, 0, unblocked.stderr);
    await reporter.stop();
    await monitor.stop();
  });

  it('unblock lifts a fence while the disk is still frozen; status shows it; the hook sees every change', async (t: TestContext) => {
    requireRoot(t);
    // A state directory of its own: earlier tests leave overridden reporters behind.
    stateDir = path.join(dir, 'run-unblock');
    fifo = path.join(stateDir, 'ebsmon.fifo');
    const hookLog = path.join(dir, 'hook.log');
    const hook = path.join(dir, 'hook.sh');
    // For slowhook's fence it hangs, with a child of its own: its deadline must end both.
    const hungPids = path.join(dir, 'hung-hook.pids');
    // Should that fail, the test ends them itself: the pids the hook wrote, while they are still the hook's.
    t.after(() => {
      for (const pid of fs.existsSync(hungPids) ? fs.readFileSync(hungPids, 'utf8').trim().split(' ').map(Number) : []) {
        try {
          if (fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes('EBSMON_REPORTER=slowhook'))
            process.kill(pid, 'SIGKILL');
        } catch {
          // Gone.
        }
      }
    });
    fs.writeFileSync(hook, `#!/bin/sh
echo "$EBSMON_REPORTER $EBSMON_STATE $EBSMON_PORTS $EBSMON_REASON" >> ${hookLog}
if [ "$EBSMON_REPORTER $EBSMON_STATE" = "slowhook fenced" ]; then
  sleep 600 &
  echo "$$ $!" > ${hungPids}
  wait
fi
exit 0
`, {mode: 0o755});
    const textfile = path.join(dir, 'textfile', 'ebsmon.prom');
    fs.mkdirSync(path.dirname(textfile));
    const monitor = startMonitor([`--on-change=${hook}`, `--metrics-file=${textfile}`]);
    await ready(monitor);
    const reporter = startReporter();
    await waitFor('healthy', () => stateOf('www') === 'healthy');
    const status = (...args: Array<string>) => ebsmonOnce(['status', `--state-dir=${stateDir}`, ...args]);
    await waitFor('healthy in the metrics', () => sample(textfile, 'ebsmon_reporter_state{reporter="www",state="healthy"}') === 1);

    const ok = await status('--nagios');
    assert.equal(ok.code, 0);
    assert.match(ok.stdout, /^OK: 1 reporter healthy, monitor pulse \d+\.\ds ago \| reporters=1 fenced=0 overridden=0 pulse_age=/);
    // Status needs no privilege: an unprivileged user with read access to the state dir.
    fs.chmodSync(dir, 0o755);
    const bundle = path.join(dir, 'ebsmon-for-nobody');
    fs.copyFileSync(EBSMON, bundle);
    const unprivileged = await ebsmonOnce(['status', `--state-dir=${stateDir}`, '--nagios'], {user: {name: 'nobody', bundle}});
    assert.equal(unprivileged.stderr, '');
    assert.equal(unprivileged.code, 0);
    assert.match(unprivileged.stdout, /^OK: 1 reporter healthy/);

    volume.freeze();
    try {
      await waitFor('the fence', () => stateOf('www') === 'fenced');
      const critical = await status('--nagios');
      assert.equal(critical.code, 2);
      assert.match(critical.stdout, /^CRITICAL: 1 of 1 reporters fenced \(www\)/);
      const table = await status();
      assert.equal(table.code, 0);
      const headline = backend === 'nftables' ? 'firewall nftables \\(deadlines in the kernel\\)' : 'firewall iptables';
      assert.match(table.stdout, new RegExp(`^monitor alive: pid \\d+, pulse \\d+\\.\\ds ago, 1 reporter, ${headline}\nREPORTER +STATE +PORTS +LAST HEARTBEAT +DEADLINE +FENCED SINCE +FENCES +DEVICES\nwww +fenced +7000 +\\d+\\.\\ds ago +- +\\d{4}-.*Z \\(\\d+\\.\\ds ago\\) +1 +\\S+/www=/dev/loop\\d+\n$`));
      const json = JSON.parse((await status('--json')).stdout);
      assert.equal(json.monitor.alive, true);
      assert.equal(json.monitor.firewall, backend);
      assert.equal(json.reporters[0].paths[0].source, volume.device, 'the device the reporter pinned');
      assert.equal(json.reporters[0].state, 'fenced');
      assert.equal(typeof json.reporters[0].lastHeartbeatAgeSeconds, 'number');

      // The metrics, in the state dir and at --metrics-file, pass Prometheus's own parser and linter.
      for (const file of [path.join(stateDir, 'metrics.prom'), textfile]) {
        await waitFor(`the fence in ${file}`, () => sample(file, 'ebsmon_reporter_state{reporter="www",state="fenced"}') === 1);
        assert.equal(promtool(file), '');
        assert.equal(sample(file, 'ebsmon_reporter_state{reporter="www",state="healthy"}'), 0);
        assert.equal(sample(file, 'ebsmon_reporter_fences_total{reporter="www"}'), 1);
        assert.equal(sample(file, 'ebsmon_reporter_flaps_total{reporter="www"}'), 0);
        // The monitor calls it fenced from the earliest moment the kernel may have (its element can run out up to 20 ms early).
        assert.ok(sample(file, 'ebsmon_reporter_last_heartbeat_age_seconds{reporter="www"}')! >= 2 - 0.05, 'silent for --timeout');
        assert.ok(sample(file, 'ebsmon_reporter_probe_latency_seconds{reporter="www"}')! >= 0, 'a number, not NaN');
        assert.ok(sample(file, 'ebsmon_heartbeats_total')! > 0);
        assert.equal(sample(file, 'ebsmon_lines_rejected_total{reason="malformed"}'), 0);
        assert.equal(sample(file, 'ebsmon_firewall_ok'), 1);
        assert.equal(sample(file, `ebsmon_firewall_backend{backend="${backend}",deadlines_in_kernel="${backend === 'nftables'}"}`), 1);
        assert.ok(fs.readFileSync(file, 'utf8').includes(`ebsmon_reporter_path_info{reporter="www",path="${path.join(volume.mountpoint, 'www')}",device=`), 'the watched path and its device');
        assert.ok(Math.abs(sample(file, 'ebsmon_monitor_pulse_timestamp_seconds')! - Date.now() / 1000) < 60);
      }

      // A hook that hangs does not delay the next fence.
      send(encodeMessage(synthetic('slowhook', [7003])));
      await waitFor('slowhook fenced', () => stateOf('slowhook') === 'fenced');
      send(encodeMessage(synthetic('after', [7004])));
      await waitFor('the next fence despite a hanging hook', () => stateOf('after') === 'fenced' && fenced('after', 7004));

      const lifted = await ebsmonOnce(['unblock', '--reporter=www', `--fifo=${fifo}`, `--state-dir=${stateDir}`]);
      assert.equal(lifted.code, 0, lifted.stderr);
      assert.equal(lifted.stdout, 'www: fence lifted; overridden until its next heartbeat\n');
      assert.equal(await tcpTry(rig.cli, rig.srvV4, PORT), 'ok', 'remote clients connect while the disk is still frozen');
      assert.equal(stateOf('www'), 'overridden');
      const warning = await status('--nagios');
      assert.equal(warning.code, 2, 'slowhook and after are still fenced');
      const again = await ebsmonOnce(['unblock', '--reporter=www', `--fifo=${fifo}`, `--state-dir=${stateDir}`]);
      assert.equal(again.stdout, 'www is overridden: not fenced, nothing changed\n');
      const unknown = await ebsmonOnce(['unblock', '--reporter=nosuch', `--fifo=${fifo}`, `--state-dir=${stateDir}`]);
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /unknown reporter nosuch/);
      assert.equal((await ebsmonOnce(['unblock', '--reporter=slowhook', `--fifo=${fifo}`, `--state-dir=${stateDir}`])).code, 0);
      assert.equal((await ebsmonOnce(['unblock', '--reporter=after', `--fifo=${fifo}`, `--state-dir=${stateDir}`])).code, 0);
      const warn = await status('--nagios');
      assert.equal(warn.code, 1);
      assert.match(warn.stdout, /^WARNING: 3 reporters overridden/);
    } finally {
      volume.thaw();
    }
    await waitFor('healthy after thaw', () => stateOf('www') === 'healthy');
    await waitFor('healthy in the metrics again', () => sample(textfile, 'ebsmon_reporter_state{reporter="www",state="healthy"}') === 1);
    // The fence was lifted by the operator, not by resumed heartbeats: no flap.
    assert.equal(sample(textfile, 'ebsmon_reporter_flaps_total{reporter="www"}'), 0);
    assert.equal(sample(textfile, 'ebsmon_reporter_fences_total{reporter="www"}'), 1);
    assert.equal(promtool(textfile), '');
    const hookSaw = () => (fs.existsSync(hookLog) ? fs.readFileSync(hookLog, 'utf8') : '');
    await waitFor('the hook log', () => /^www fenced 7000 no heartbeat for \d/m.test(hookSaw()) && /^www overridden 7000 unblock by /m.test(hookSaw()) && /^www healthy 7000 heartbeat after override/m.test(hookSaw()));

    // The hanging hook: killed at its deadline (10 s) with its whole process group, and slowhook's next change runs after it.
    await waitFor('the hanging hook killed at its deadline', () => monitor.logs().some(l => l.reporter === 'slowhook' && /^--on-change \S+ was killed after 10 s$/.test(String(l.message))), 30_000);
    const [hookPid, childPid] = fs.readFileSync(hungPids, 'utf8').trim().split(' ').map(Number);
    await waitFor('the hook and its child gone', () => [hookPid!, childPid!].every(pid => [null, 'Z'].includes(processState(pid))), 10_000);
    await waitFor('slowhook\'s next change run', () => /^slowhook overridden 7003 unblock by /m.test(hookSaw()));

    await reporter.stop();
    await monitor.stop();
  });

  it('unblock with no monitor running removes only ebsmon rules, and records the override', async (t: TestContext) => {
    requireRoot(t);
    stateDir = path.join(dir, 'run-nomonitor');
    fifo = path.join(stateDir, 'ebsmon.fifo');
    const monitor = startMonitor();
    await ready(monitor);
    send(encodeMessage(synthetic('left', [7006])));
    send(encodeMessage(synthetic('right', [7007])));
    await waitFor('both fenced', () => stateOf('left') === 'fenced' && stateOf('right') === 'fenced' && fenced('right', 7007) && fenced('left', 7006));
    monitor.kill('SIGKILL');
    await monitor.exited;
    const stale = await ebsmonOnce(['status', `--state-dir=${stateDir}`, '--nagios']);
    assert.equal(stale.code, 2, stale.stdout + stale.stderr);
    await waitFor('the pulse to go stale', async () => /^CRITICAL: monitor not running/.test((await ebsmonOnce(['status', `--state-dir=${stateDir}`, '--nagios'])).stdout), 10_000, 250);

    const one = await ebsmonOnce(['unblock', '--reporter=left', `--fifo=${fifo}`, `--state-dir=${stateDir}`], {ns: rig.srv});
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stdout, backend === 'iptables'
      ? 'no monitor running: removed ebsmon rules for left from iptables and ip6tables\n'
      : 'no monitor running: opened left\'s port(s) 7006 in table inet ebsmon (no deadline until the next monitor re-arms them)\n');
    assert.ok(unfenced(backend, rig.srv, 7006), 'left\'s port in neither family');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, 7006), 'ok');
    assert.equal(await tcpTry(rig.cli, rig.srvV6, 7006), 'ok');
    assert.ok(fenced('right', 7007));
    assert.equal(await tcpTry(rig.cli, rig.srvV4, 7007), 'refused');
    assert.equal(await tcpTry(rig.cli, rig.srvV6, 7007), 'refused');
    assert.equal(stateOf('left'), 'overridden');

    const all = await ebsmonOnce(['unblock', '--all', `--fifo=${fifo}`, `--state-dir=${stateDir}`], {ns: rig.srv});
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, backend === 'iptables' ? /^no monitor running: removed every ebsmon rule/ : /^no monitor running: deleted table inet ebsmon/);
    const save = sh(inNs(rig.srv, ['iptables-save'])) + sh(inNs(rig.srv, ['ip6tables-save'])) + sh(inNs(rig.srv, ['nft', 'list', 'ruleset']));
    assert.doesNotMatch(save, /EBSMON|ebsmon/);
    assert.equal(foreignRules(backend, rig.srv), before0);

    fs.writeFileSync(path.join(stateDir, 'state.json'), '{"v": 1, "monitor": 42');
    const corrupt = await ebsmonOnce(['status', `--state-dir=${stateDir}`]);
    assert.equal(corrupt.code, 1);
    assert.equal(corrupt.stderr, `Snapshot Error: ${path.join(stateDir, 'state.json')} is not valid JSON (corrupt, or not written by ebsmon)\n`);
    assert.equal((await ebsmonOnce(['status', `--state-dir=${stateDir}`, '--nagios'])).code, 3);
    fs.rmSync(path.join(stateDir, 'state.json'));
    const missing = await ebsmonOnce(['status', `--state-dir=${stateDir}`, '--nagios']);
    assert.equal(missing.code, 3);
    assert.match(missing.stdout, /^UNKNOWN: no ebsmon snapshot at /);
  });

  // iptables only: the nftables repairs are in deadlines.test.ts.
  if (backend === 'iptables')
  it('puts back rules flushed behind its back, and retries a broken iptables until it works', async (t: TestContext) => {
    requireRoot(t);
    const bin = path.join(dir, 'bin');
    fs.mkdirSync(bin, {recursive: true});
    for (const tool of ['iptables-restore', 'ip6tables-restore'])
      fs.writeFileSync(path.join(bin, tool), '#!/bin/sh\necho "broken on purpose" >&2\nexit 4\n', {mode: 0o755});
    const monitor = startMonitor(['--protect-ports='], scrubbedEnv({PATH: `${bin}:${process.env.PATH}`}));
    await waitFor('the failure logged', () => monitor.logs().some(l => /firewall update failed: iptables-restore: exit 4: broken on purpose/.test(String(l.message))));
    assert.ok(monitor.running);
    for (const tool of ['iptables-restore', 'ip6tables-restore'])
      fs.writeFileSync(path.join(bin, tool), `#!/bin/sh\nexec /usr/sbin/${tool} "$@"\n`, {mode: 0o755});
    await ready(monitor);
    send(encodeMessage(synthetic('flushme', [7002])));
    await waitFor('flushme fenced', () => stateOf('flushme') === 'fenced' && fenced('flushme', 7002));

    assert.ok(fencedFor(backend, rig.srv, 'flushme', 7002, 'forward'), 'published container ports too');

    // Behind its back, one at a time, so that each repair is seen on its own: IPv4's input rule
    // and jump, IPv6's input rule, IPv4's forward rule, IPv6's forward jump. Each family is read on its own.
    const jump = (chain: string) => ['-m', 'comment', '--comment', 'ebsmon:jump', '-j', chain];
    const damage: Array<[string, Array<Array<string>>]> = [
      ['IPv4 input', [['iptables', '-F', 'EBSMON'], ['iptables', '-D', 'INPUT', ...jump('EBSMON')]]],
      ['IPv6 input', [['ip6tables', '-F', 'EBSMON']]],
      ['IPv4 forward', [['iptables', '-F', 'EBSMON_FWD']]],
      ['IPv6 forward', [['ip6tables', '-D', 'FORWARD', ...jump('EBSMON_FWD')]]],
    ];
    for (const [what, commands] of damage) {
      for (const argv of commands)
        sh(inNs(rig.srv, argv));
      await waitFor(`${what}: every rule and jump back, in both families`, () => fencedFor(backend, rig.srv, 'flushme', 7002, 'input') && fencedFor(backend, rig.srv, 'flushme', 7002, 'forward'), 15_000);
    }
    for (const [tool, chain] of [['iptables', 'INPUT'], ['ip6tables', 'INPUT'], ['iptables', 'FORWARD'], ['ip6tables', 'FORWARD']] as const)
      assert.match(sh(inNs(rig.srv, [tool, '-S', chain])).split('\n')[1] ?? '', /ebsmon:jump/, `${tool} ${chain}: the jump at position 1`);
    await waitFor('the repair logged', () => monitor.logs().some(l => /changed behind its back/.test(String(l.message))));
    await monitor.stop();
  });
});
