import fs from 'node:fs';
import path from 'node:path';

import {Teardown, sh} from './rig';

export type SwitchedHost = {role: string, ns: string, ip: string};

/**
 * Hosts on one /24: a namespace per role (ebsmon-PREFIXROLE-TAG), each with
 * eth0 on a switch (a bridge in a namespace of its own, ebsmon-PREFIXsw-TAG,
 * its ports named LETTER<i>xTAG); firewall changes stay inside them.
 */
export function createSwitchedNet(teardown: Teardown, {prefix, letter, tag, hosts}: {prefix: string, letter: string, tag: string, hosts: ReadonlyArray<{role: string, ip: string}>}): {switchNs: string, hosts: Array<SwitchedHost>} {
  const ns = (role: string) => `ebsmon-${prefix}${role}-${tag}`;
  const switchNs = ns('sw');
  const net = hosts.map((h, i) => ({role: h.role, ns: ns(h.role), ip: h.ip, port: `${letter}${i}x${tag}`}));
  for (const n of [switchNs, ...net.map(m => m.ns)]) {
    sh(['ip', 'netns', 'add', n]);
    teardown.add(['ip', 'netns', 'del', n]);
    sh(['ip', '-n', n, 'link', 'set', 'lo', 'up']);
  }
  sh(['ip', '-n', switchNs, 'link', 'add', 'br0', 'type', 'bridge']);
  sh(['ip', '-n', switchNs, 'link', 'set', 'br0', 'up']);
  for (const m of net) {
    sh(['ip', 'link', 'add', m.port, 'netns', switchNs, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', m.ns]);
    sh(['ip', '-n', switchNs, 'link', 'set', m.port, 'master', 'br0', 'up']);
    sh(['ip', '-n', m.ns, 'addr', 'add', `${m.ip}/24`, 'dev', 'eth0']);
    sh(['ip', '-n', m.ns, 'link', 'set', 'eth0', 'up']);
  }
  return {switchNs, hosts: net.map(({role, ns: n, ip}) => ({role, ns: n, ip}))};
}

/**
 * A service that drops root (postgres, mysql) walks into its directories
 * below `dir`: a temporary directory is 0700, and so may be the one it is made in.
 */
export function letServiceUsersIn(dir: string): void {
  for (let d = path.resolve(dir); d !== '/'; d = path.dirname(d)) {
    const mode = fs.statSync(d).mode & 0o7777;
    if ((mode & 0o001) === 0)
      fs.chmodSync(d, mode | 0o011);
  }
  fs.chmodSync(dir, 0o755);
}

/**
 * A cluster built and booted, or nothing left behind: a build that fails
 * disposes of what it made; a boot that fails stops the cluster and says
 * the error with the last lines of its logs.
 */
export async function buildAndBoot<C extends {logTail(): string, stop(): Promise<void>}>(dir: string, build: (teardown: Teardown) => Promise<C>, boot: (cluster: C) => Promise<void>): Promise<C> {
  const teardown = new Teardown(dir);
  let cluster: C;
  try {
    cluster = await build(teardown);
  } catch (error) {
    teardown.dispose();
    throw error;
  }
  try {
    await boot(cluster);
  } catch (error) {
    const logs = cluster.logTail();
    await cluster.stop();
    throw new Error(`${(error as Error).message}\n${logs}`);
  }
  return cluster;
}
