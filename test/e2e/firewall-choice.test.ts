import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import {encodeMessage} from '../../src/heartbeat';
import {FifoWriter} from '../../src/transport';
import {ebsmonTable, fencedFor, unfenced} from '../helpers/firewall';
import {HELPER, Proc, ebsmon, ebsmonOnce, reporterIn, scrubbedEnv, tcpTry} from '../helpers/proc';
import {createNetRig, isRoot, requireRoot, sh, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';
import {useScratch} from '../helpers/suite';

/** Everything the monitor, its spawn helper and the test's own `ip netns exec` run, except nft (and node, linked apart). */
const TOOLS_BUT_NFT = ['ip', 'env', 'bash', 'setsid', 'mkfifo', 'ss',
  'iptables', 'iptables-save', 'iptables-restore', 'ip6tables', 'ip6tables-save', 'ip6tables-restore'];

describe('--firewall=auto (the default): nftables where nft works, else iptables', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let rig: NetRig;
  const scratch = useScratch(async ({teardown, track}) => {
    rig = createNetRig(teardown);
    const server = track(new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), '7001', '7002'], {stdio: ['ignore', 'pipe', 'pipe']})));
    await waitFor('the server', () => server.stdout.includes('listening'));
  });
  const {track} = scratch;

  /** A monitor in the server namespace; one heartbeat from `name` for `port`, then silence: fenced 2 s later. */
  const fenceOnce = async (run: string, name: string, port: number, env?: NodeJS.ProcessEnv) => {
    const stateDir = path.join(scratch.dir, run);
    const fifo = path.join(stateDir, 'ebsmon.fifo');
    const monitor = track(ebsmon(['monitor', `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--timeout=2', '--recover=2'], {ns: rig.srv, env}));
    await waitFor('the monitor', () => monitor.logs().some(l => l.message === 'monitor running'));
    assert.equal(await tcpTry(rig.cli, rig.srvV4, port), 'ok');
    const writer = new FifoWriter(fifo);
    assert.ok(writer.send(encodeMessage({v: 1, kind: 'heartbeat', name, pid: 4242, ports: [port], interval: 1, probeTimeout: 0.5, seq: 1, sentAt: Date.now(), probeMs: 1})).ok);
    writer.close();
    await waitFor(`${name} fenced`, () => reporterIn(stateDir, name)?.state === 'fenced');
    const status = JSON.parse((await ebsmonOnce(['status', `--state-dir=${stateDir}`, '--json'])).stdout) as {monitor: {firewall: string, deadlinesInKernel: boolean}};
    return {monitor, status: status.monitor};
  };

  it('picks nftables where nft works: table inet ebsmon, the deadline in the kernel', async (t: TestContext) => {
    requireRoot(t);
    const {monitor, status} = await fenceOnce('nft', 'withnft', 7001);
    assert.equal(status.firewall, 'nftables');
    assert.equal(status.deadlinesInKernel, true);
    await waitFor('the fence in table inet ebsmon', () => fencedFor('nftables', rig.srv, 'withnft', 7001));
    assert.ok(unfenced('iptables', rig.srv, 7001), 'nothing in iptables');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, 7001), 'refused');
    assert.equal(await tcpTry(rig.cli, rig.srvV6, 7001), 'refused');
    await monitor.stop();
  });

  it('falls back to iptables where nft is missing: says so, and fences in both families with iptables', async (t: TestContext) => {
    requireRoot(t);
    // A PATH of the test's own: the tools, as symbolic links, and no nft.
    const bin = path.join(scratch.dir, 'bin-without-nft');
    fs.mkdirSync(bin);
    for (const tool of TOOLS_BUT_NFT)
      fs.symlinkSync(sh(['bash', '-c', `command -v ${tool}`]).trim(), path.join(bin, tool));
    fs.symlinkSync(process.execPath, path.join(bin, 'node'));
    const env = scrubbedEnv({PATH: bin});
    assert.equal(sh(['env', `PATH=${bin}`, 'bash', '-c', 'command -v nft || echo none']), 'none\n');

    const {monitor, status} = await fenceOnce('nonft', 'nonft', 7002, env);
    assert.ok(monitor.logs().some(l => /^nftables is not usable here \(.+\): falling back to iptables, where the monitor itself must be running to fence$/.test(String(l.message))), monitor.stderr.slice(0, 2000));
    assert.equal(status.firewall, 'iptables');
    assert.equal(status.deadlinesInKernel, false);
    await waitFor('the fence in iptables and ip6tables', () => fencedFor('iptables', rig.srv, 'nonft', 7002));
    assert.equal(ebsmonTable(rig.srv)?.guarded.has(7002) ?? false, false, 'nothing in nftables');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, 7002), 'refused');
    assert.equal(await tcpTry(rig.cli, rig.srvV6, 7002), 'refused');
    await monitor.stop();
  });
});
