import os from 'node:os';

import type {Runner} from './firewall';
import {describeRun} from './firewall';
import {killSocketsArgv} from './rules';

export const SS_DEADLINE_MS = 8_000;

/** Every address of this host, so `ss -K` spares local peers (read from netlink, not disk). */
export function localAddresses(): Array<string> {
  const out: Array<string> = [];
  for (const list of Object.values(os.networkInterfaces()))
    for (const entry of list ?? [])
      out.push(entry.address.replace(/%.*$/, ''));
  return out;
}

export type CloseResult = {closed: number} | {unsupported: string} | {failed: string};

/**
 * Closes idle established connections from remote peers to fenced ports
 * (`ss -K`, Linux's SOCK_DESTROY): a connection that sends nothing would
 * otherwise stay up until its next packet meets the reset. Off the fence path.
 */
export async function closeEstablished(run: Runner, ports: ReadonlyArray<number>): Promise<CloseResult> {
  const argv = killSocketsArgv(ports, localAddresses());
  if (argv === null)
    return {closed: 0};
  const result = await run(argv, {timeoutMs: SS_DEADLINE_MS});
  if (result.spawnError !== undefined || result.timedOut)
    return {failed: describeRun(result, SS_DEADLINE_MS)};
  // Kernels without CONFIG_INET_DIAG_DESTROY refuse SOCK_DESTROY.
  if (result.code !== 0 || /not supported|Operation not permitted/i.test(result.stderr))
    return {unsupported: describeRun(result, SS_DEADLINE_MS)};
  return {closed: result.stdout.split('\n').filter(line => /^\S/.test(line) && !line.startsWith('State') && !line.startsWith('Recv-Q')).length};
}
