import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import path from 'node:path';
import {describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import {BACKENDS, fencedFor, unfenced} from '../helpers/firewall';
import {HELPER, Proc, ebsmon, reporterIn, tcpTry} from '../helpers/proc';
import {LoopVolume, createNetRig, isRoot, requireRoot, sh, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';
import {useScratch} from '../helpers/suite';

const PORT = 7000;

/** The watcher's record of one port: every change of outcome, timestamped. */
type Seen = Array<{state: string, t: number}>;
const seen = (proc: Proc): Seen => proc.stdout.split('\n').filter(Boolean).map(line => JSON.parse(line) as {state: string, t: number});

/**
 * Two services, each on a volume of its own, behind one port (a proxy in front
 * of two databases, say): both reporters list it. The port is fenced while
 * either is, so it fences at the earlier of their deadlines, and opens only
 * once both are healthy.
 */
for (const backend of BACKENDS)
describe(`--firewall=${backend}: two reporters claim one port`, {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let rig: NetRig;
  let alpha: LoopVolume;
  let beta: LoopVolume;
  const scratch = useScratch(async ({dir, teardown, track, first}) => {
    rig = createNetRig(teardown);
    alpha = LoopVolume.create(dir, teardown, 64, {name: 'alpha'});
    beta = LoopVolume.create(dir, teardown, 64, {name: 'beta'});
    first(() => {
      alpha.thaw();
      beta.thaw();
    });
    for (const volume of [alpha, beta])
      sh(['mkdir', path.join(volume.mountpoint, 'data')]);
    const server = track(new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']})));
    await waitFor('the server', () => server.stdout.includes('listening'));
  });
  const {track} = scratch;

  it('fences when either reporter goes silent, at its deadline while the other is healthy, and opens only when both are healthy again (IPv4 and IPv6)', async (t: TestContext) => {
    requireRoot(t);
    const stateDir = path.join(scratch.dir, 'run');
    const fifo = path.join(stateDir, 'ebsmon.fifo');
    const monitor = track(ebsmon(['monitor', `--firewall=${backend}`, `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--timeout=2', '--recover=2'], {ns: rig.srv}));
    await waitFor('the monitor', () => monitor.logs().some(l => l.message === 'monitor running'));
    for (const [name, volume] of [['alpha', alpha], ['beta', beta]] as const) {
      track(ebsmon(['report', `--monitor=${path.join(volume.mountpoint, 'data')}`, `--name=${name}`, `--ports=${PORT}`, `--fifo=${fifo}`, '--interval=0.2', '--probe-timeout=0.5']));
    }
    const stateOf = (name: string) => reporterIn(stateDir, name)?.state;
    await waitFor('both healthy', () => stateOf('alpha') === 'healthy' && stateOf('beta') === 'healthy');
    const watches = [rig.srvV4, rig.srvV6].map(host => track(new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('watcher.mjs'), host, String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']}))));
    const all = (state: string) => watches.every(w => seen(w).at(-1)?.state === state);
    await waitFor('the remote clients connecting', () => all('ok'));

    // alpha's volume stops: its deadline passes while beta goes on heartbeating.
    alpha.freeze();
    const alphaFrozenAt = Date.now();
    await waitFor('refused for alpha', () => all('refused'));
    for (const watch of watches) {
      // alpha's last heartbeat came at most an interval and a probe (0.5 s) before the freeze.
      const refusedAt = seen(watch).at(-1)!.t - alphaFrozenAt;
      assert.ok(refusedAt >= 2_000 - 700 && refusedAt < 4_000, `fenced at alpha's deadline (--timeout=2 after its last heartbeat): ${refusedAt} ms after the freeze`);
    }
    assert.equal(stateOf('alpha'), 'fenced');
    assert.equal(stateOf('beta'), 'healthy');
    assert.ok(fencedFor(backend, rig.srv, 'alpha', PORT), 'fenced for alpha in both families');

    // beta's volume stops too, then alpha's answers again: still fenced, now for beta.
    beta.freeze();
    await waitFor('beta fenced', () => stateOf('beta') === 'fenced' && fencedFor(backend, rig.srv, 'beta', PORT));
    alpha.thaw();
    await waitFor('alpha healthy again', () => stateOf('alpha') === 'healthy');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, PORT), 'refused', 'alpha is healthy, beta is not');
    assert.equal(await tcpTry(rig.cli, rig.srvV6, PORT), 'refused');

    // beta's answers: both healthy, the port opens.
    const betaThawedAt = Date.now();
    beta.thaw();
    await waitFor('both healthy again', () => stateOf('alpha') === 'healthy' && stateOf('beta') === 'healthy');
    await waitFor('the remote clients back', () => all('ok'));
    for (const watch of watches) {
      // From alpha's fence on (before it, a loaded machine's connect may time out and then succeed again: the port was open then).
      const fencedAt = seen(watch).find(s => s.t > alphaFrozenAt && s.state === 'refused')!.t;
      const opened = seen(watch).filter(s => s.t > fencedAt && s.state === 'ok');
      assert.ok(opened.every(s => s.t > betaThawedAt), `open only once beta answered too: ${JSON.stringify(seen(watch))}`);
    }
    assert.ok(unfenced(backend, rig.srv, PORT), 'no fence left in either family');
    assert.equal(monitor.running, true);
  });
});
