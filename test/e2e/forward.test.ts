import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import path from 'node:path';
import {describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import {BACKENDS, fencedFor, foreignRules} from '../helpers/firewall';
import {HELPER, Proc, ebsmon, reporterIn, tcpTry} from '../helpers/proc';
import {LoopVolume, createContainerRig, createNetRig, inNs, isRoot, requireRoot, sh, waitFor} from '../helpers/rig';
import type {ContainerRig, NetRig} from '../helpers/rig';
import {useScratch} from '../helpers/suite';

const PUBLISHED = 13306;
const INSIDE = 3306;

/**
 * What `docker run -p 13306:3306` leaves in iptables (iptables-nft, as Docker
 * does on Debian 12): DNAT from the published port in nat's DOCKER chain,
 * FORWARD policy DROP, DOCKER-USER first, an ACCEPT for the container.
 */
function dockerRules(ctr: ContainerRig, family: 'v4' | 'v6'): string {
  const address = family === 'v4' ? ctr.v4 : ctr.v6;
  const to = family === 'v4' ? `${address}:${INSIDE}` : `[${address}]:${INSIDE}`;
  const loopback = family === 'v4' ? '127.0.0.0/8' : '::1/128';
  const host = family === 'v4' ? '32' : '128';
  return `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d ${loopback} -m addrtype --dst-type LOCAL -j DOCKER
-A DOCKER -i ${ctr.hostIf} -j RETURN
-A DOCKER ! -i ${ctr.hostIf} -p tcp -m tcp --dport ${PUBLISHED} -j DNAT --to-destination ${to}
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -o ${ctr.hostIf} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o ${ctr.hostIf} -j DOCKER
-A FORWARD -i ${ctr.hostIf} ! -o ${ctr.hostIf} -j ACCEPT
-A DOCKER -d ${address}/${host} ! -i ${ctr.hostIf} -o ${ctr.hostIf} -p tcp -m tcp --dport ${INSIDE} -j ACCEPT
-A DOCKER-USER -j RETURN
COMMIT
`;
}

for (const backend of BACKENDS)
describe(`--firewall=${backend}: ports the host forwards to a container (Docker's -p)`, {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let rig: NetRig;
  let ctr: ContainerRig;
  let volume: LoopVolume;
  const scratch = useScratch(async ({dir, teardown, track, first}) => {
    rig = createNetRig(teardown);
    ctr = createContainerRig(teardown, rig);
    volume = LoopVolume.create(dir, teardown);
    first(() => volume.thaw());
    sh(['mkdir', path.join(volume.mountpoint, 'db')]);
    sh(inNs(rig.srv, ['iptables-restore']), {input: dockerRules(ctr, 'v4')});
    sh(inNs(rig.srv, ['ip6tables-restore']), {input: dockerRules(ctr, 'v6')});
    // Podman's netavark accepts in nftables, in a base chain that runs first.
    sh(inNs(rig.srv, ['nft', '-f', '-']), {input: `table inet netavark {\n chain forward {\n  type filter hook forward priority -10; policy accept;\n  ip daddr ${ctr.v4} tcp dport ${INSIDE} accept\n  ip6 daddr ${ctr.v6} tcp dport ${INSIDE} accept\n }\n}\n`});
    const server = track(new Proc(spawn('ip', ['netns', 'exec', ctr.ns, process.execPath, HELPER('server.mjs'), String(INSIDE)], {stdio: ['ignore', 'pipe', 'pipe']})));
    await waitFor('the container\'s server', () => server.stdout.includes('listening'));
  });
  const {track} = scratch;

  it('reachable while healthy; refused by --timeout when the volume freezes (IPv4 and IPv6), connections cut, the host\'s own traffic spared; back after the thaw; Docker\'s rules untouched and no bypass', async (t: TestContext) => {
    requireRoot(t);
    const stateDir = path.join(scratch.dir, 'run');
    const fifo = path.join(stateDir, 'ebsmon.fifo');
    const monitor = track(ebsmon(['monitor', `--firewall=${backend}`, `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--timeout=2', '--recover=2'], {ns: rig.srv}));
    await waitFor('the monitor', () => monitor.logs().some(l => l.message === 'monitor running'));
    // The reporter watches the host directory bind-mounted into the container, and names the published port.
    const reporter = track(ebsmon(['report', `--monitor=${path.join(volume.mountpoint, 'db')}`, `--ports=${PUBLISHED}`, `--fifo=${fifo}`, '--interval=0.2', '--probe-timeout=0.5']));
    await waitFor('healthy', () => reporterIn(stateDir, 'db')?.state === 'healthy');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, PUBLISHED), 'ok', 'the published port reaches the container');
    assert.equal(await tcpTry(rig.cli, rig.srvV6, PUBLISHED), 'ok');
    const before0 = foreignRules(backend, rig.srv);

    const holder = (host: string, mode: 'talk' | 'idle') => track(new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('holder.mjs'), host, String(PUBLISHED), mode], {stdio: ['ignore', 'pipe', 'pipe']})));
    const talker = holder(rig.srvV4, 'talk');
    const idle = holder(rig.srvV6, 'idle');
    await waitFor('both forwarded connections answered', () => talker.stdout.includes('pong') && idle.stdout.includes('pong'));

    volume.freeze();
    try {
      await waitFor('the fence', () => reporterIn(stateDir, 'db')?.state === 'fenced' && fencedFor(backend, rig.srv, 'db', PUBLISHED));
      assert.equal(await tcpTry(rig.cli, rig.srvV4, PUBLISHED), 'refused');
      assert.equal(await tcpTry(rig.cli, rig.srvV6, PUBLISHED), 'refused');
      await waitFor('the talking forwarded connection reset', () => /reset|closed/.test(talker.stdout));
      // An idle pooled connection: nothing to cut until it is used; its next request is reset at once.
      const poked = performance.now();
      idle.kill('SIGUSR1');
      await waitFor('the idle forwarded connection reset when reused', () => /reset|closed/.test(idle.stdout));
      assert.ok(performance.now() - poked < 5_000, 'reset on its next packet, not after a timeout');
      // The host itself (a health check through the published port, nat OUTPUT) is not forwarded traffic.
      assert.equal(await tcpTry(rig.srv, rig.srvV4, PUBLISHED), 'ok', 'the host\'s own connection is spared');
      // The container itself still answers on its own address: only the published path is fenced.
      assert.equal(await tcpTry(rig.srv, ctr.v4, INSIDE), 'ok');
      assert.equal(foreignRules(backend, rig.srv), before0, 'Docker\'s and netavark\'s rules untouched during the fence');
    } finally {
      volume.thaw();
    }
    await waitFor('healthy after the thaw', () => reporterIn(stateDir, 'db')?.state === 'healthy');
    await waitFor('the published port back', async () => await tcpTry(rig.cli, rig.srvV4, PUBLISHED) === 'ok');
    assert.equal(await tcpTry(rig.cli, rig.srvV6, PUBLISHED), 'ok');
    assert.equal(foreignRules(backend, rig.srv), before0, 'untouched after');
    await reporter.stop();
    await monitor.stop();
  });
});
