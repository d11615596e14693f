import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import {renderMetrics} from '../../src/state';
import type {Snapshot} from '../../src/state';
import {ROOT, inCI} from '../helpers/rig';

const RULES = path.join(ROOT, 'contrib', 'prometheus');

function promtool(t: TestContext, args: Array<string>): {code: number | null, out: string} | null {
  const result = spawnSync('promtool', args, {cwd: RULES, encoding: 'utf8'});
  if (result.error !== undefined) {
    // promtool comes from Debian's prometheus package, which make test installs.
    assert.ok(!inCI, `promtool: ${result.error.message}`);
    t.skip('promtool is not installed');
    return null;
  }
  return {code: result.status, out: `${result.stdout}${result.stderr}`};
}

describe('Prometheus alert rules (contrib/prometheus)', () => {
  it('are valid rules', (t: TestContext) => {
    const result = promtool(t, ['check', 'rules', 'ebsmon-rules.yml']);
    if (result !== null)
      assert.equal(result.code, 0, result.out);
  });

  it('fire, and stay silent, as the tests on synthetic series say (promtool test rules)', (t: TestContext) => {
    const result = promtool(t, ['test', 'rules', 'ebsmon-rules.test.yml']);
    if (result !== null)
      assert.equal(result.code, 0, result.out);
  });

  it('every rule has a test, and uses only metrics the monitor writes', () => {
    const rules = fs.readFileSync(path.join(RULES, 'ebsmon-rules.yml'), 'utf8');
    const tests = fs.readFileSync(path.join(RULES, 'ebsmon-rules.test.yml'), 'utf8');
    const alerts = [...rules.matchAll(/^\s+- alert: (\w+)$/gm)].map(m => m[1]!);
    assert.deepEqual(alerts, ['EbsmonReporterFenced', 'EbsmonReporterOverriddenTooLong', 'EbsmonMonitorPulseStale', 'EbsmonMetricsFileStale', 'EbsmonReporterFlapping', 'EbsmonNoReporters', 'EbsmonFirewallWritesFailing']);
    for (const alert of alerts)
      assert.match(tests, new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`), `${alert} is tested firing`);

    const snapshot: Snapshot = {
      v: 1,
      monitor: {pid: 1, startedAt: 0, writtenAt: 1000, timeout: 10, recover: 3, protectPorts: [22], heartbeats: 1, linesRejected: {malformed: 0}, firewallOk: true, firewall: 'nftables', deadlinesInKernel: true},
      reporters: [{name: 'mysql', pid: 2, ports: [3306], state: 'healthy', lastHeartbeatAt: 900, fencedSince: null, overriddenAt: null, overriddenBy: null, deadlineAt: 9900, fenceCount: 0, flapCount: 0, heartbeats: 1, lastProbeMs: 2, interval: 1, probeTimeout: 3, reason: 'first heartbeat'}],
    };
    const written = new Set([...renderMetrics(snapshot, 1000).matchAll(/^(ebsmon_\w+)[{ ]/gm)].map(m => m[1]!));
    const used = new Set([...rules.matchAll(/\b(ebsmon_\w+)\b/g)].map(m => m[1]!));
    for (const name of used)
      assert.ok(written.has(name), `${name} is a metric the monitor writes`);
  });
});
