import assert from 'node:assert/strict';
import path from 'node:path';
import {PassThrough} from 'node:stream';
import {describe, it} from 'node:test';

import {dir as tmpDir} from 'tmp-promise';

import {runCli} from '../../commands/cli';
import {LineDecoder} from '../../src/heartbeat';
import type {Message} from '../../src/heartbeat';
import {writeSnapshot} from '../../src/state';
import {ensureFifo, openFifoReader} from '../../src/transport';
import {ebsmonOnce} from '../helpers/proc';
import {waitFor} from '../helpers/rig';

/** A file of this repository that is not executable (mode 0644 in git). */
const NOT_EXECUTABLE = path.resolve(__dirname, '..', '..', 'package.json');

async function run(argv: Array<string>) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', c => {
    out += String(c);
  });
  stderr.on('data', c => {
    err += String(c);
  });
  const code = await runCli(argv, {stdout, stderr, stdin: process.stdin});
  return {code, stdout: out, stderr: err};
}

describe('command line (in process)', () => {
  const usage: Array<[Array<string>, RegExp]> = [
    [['report', '--monitor=/tmp', '--ports=0'], /Invalid value for --ports: expected ports 1-65535 .*\(got "0"\)/],
    [['report', '--monitor=/tmp', '--ports=80,x'], /--ports: .*\(got "80,x"\)/],
    [['report', '--monitor=/tmp'], /--ports/],
    [['report', '--monitor=/tmp', '--ports=80', '--interval=0'], /Invalid value for --interval: expected a positive number of seconds.*\(got "0"\)/],
    [['report', '--monitor=/tmp', '--ports=80', '--probe-timeout=-2'], /--probe-timeout/],
    [['report', '--monitor=/tmp', '--ports=80', '--name=bad name'], /Invalid value for --name/],
    [['report', '--monitor=/', '--ports=80'], /reporter name "", which is not .*; pass --name/],
    [['monitor', '--timeout', 'soon'], /Invalid value for --timeout: .*\(got "soon"\)/],
    [['monitor', '--recover=1.5'], /--recover: expected a whole number/],
    [['monitor', '--log-level=loud'], /--log-level/],
    [['unblock'], /exactly one of --reporter=NAME or --all/],
    [['unblock', '--all', '--reporter=x'], /exactly one of/],
    [['status', '--json', '--nagios'], /exclusive/],
    [['status', '--history', '--nagios'], /--history and --nagios are exclusive/],
    [['report', '--monitor=/tmp', '--ports=80', '--check=/nonexistent/ebsmon-check ping'], /--check=\/nonexistent\/ebsmon-check ping: \/nonexistent\/ebsmon-check does not exist/],
    [['report', '--monitor=/tmp', '--ports=80', `--check=${NOT_EXECUTABLE}`], new RegExp(`--check=${NOT_EXECUTABLE}: ${NOT_EXECUTABLE} is not executable`)],
    [['report', '--monitor=/tmp', '--ports=80', '--check=ebsmon-no-such-program'], /--check=ebsmon-no-such-program: ebsmon-no-such-program is not an executable in PATH/],
    [['report', '--monitor=/tmp', '--ports=80', '--check', `psql -c 'select 1`], /--check=psql -c 'select 1: a single quote is not closed/],
    [['report', '--monitor=/tmp', '--ports=80', '--rejoin=automatic'], /--rejoin=automatic: not auto or manual, and not a program: automatic is not an executable in PATH/],
    [['report', '--monitor=/tmp', '--ports=80', '--isolate=2379,80000'], /--isolate/],
    [['report', '--monitor=/tmp', '--ports=80', `--isolate=${Array.from({length: 17}, (_, i) => 2000 + i).join(',')}`], /--isolate names 17 ports; at most 16/],
    [['report', '--ports=80'], /give --monitor \(the directories to prove\), or --pid, --pid-file or --unit \(find them\), or both/],
    [['report', '--ports=80', '--pid=1', '--unit=mariadb.service'], /--pid, --pid-file and --unit: give one of them/],
    [['report', '--ports=80', '--unit=mariadb'], /--unit=mariadb: not a unit name of the form NAME\.service/],
    [['report', '--ports=80', '--unit=my db.service'], /--unit=my db\.service: not a unit name/],
    [['report', '--ports=80', '--pid=0'], /Invalid value for --pid/],
    [['report', '--ports=80', '--pid=1', '--discover-interval=0'], /Invalid value for --discover-interval/],
    [['frobnicate'], /Command not found/],
  ];
  for (const [argv, message] of usage) {
    it(`exits 2 on ${argv.join(' ')}`, async () => {
      const result = await run(argv);
      assert.equal(result.code, 2);
      assert.match(result.stderr, message);
      assert.equal(result.stdout, '');
    });
  }

  it('accepts --flag value as well as --flag=value', async () => {
    const result = await run(['status', '--state-dir', '/nonexistent/ebsmon', '--nagios']);
    assert.equal(result.code, 3);
    assert.equal(result.stdout, 'UNKNOWN: no ebsmon snapshot at /nonexistent/ebsmon/state.json (is the monitor running?)\n');
  });

  it('status without a snapshot exits 1 with a message on stderr', async () => {
    const result = await run(['status', '--state-dir=/nonexistent/ebsmon']);
    assert.equal(result.code, 1);
    assert.equal(result.stderr, 'Snapshot Error: no ebsmon snapshot at /nonexistent/ebsmon/state.json (is the monitor running?)\n');
  });

  it('status --history prints every reporter\'s transitions, oldest first, and why a reporter is not healthy', async () => {
    const {path: dir, cleanup} = await tmpDir({unsafeCleanup: true});
    try {
      const now = Date.now();
      const why = 'no heartbeat for 10.0 s: probe of /var/lib/mysql timed out after 3.0 s; nvme1n1: 14 requests in flight, none completed for 4.0 s';
      const reporter = {pid: 1, ports: [3306], lastHeartbeatAt: now - 20_000, overriddenAt: null, overriddenBy: null, fenceCount: 1, flapCount: 0, heartbeats: 1, lastProbeMs: 1, interval: 1, probeTimeout: 3};
      writeSnapshot(dir, {v: 1, monitor: {pid: process.pid, startedAt: now, writtenAt: now, timeout: 10, recover: 3, protectPorts: [22], heartbeats: 1, linesRejected: {}, firewallOk: true},
        reporters: [
          {...reporter, name: 'mysql', state: 'fenced', fencedSince: now - 10_000, reason: why, history: [
            {at: Date.UTC(2026, 11, 1, 2, 14, 3), from: 'healthy', state: 'fenced', previousSeconds: 273_600, reason: 'no heartbeat for 10.0 s'},
            {at: Date.UTC(2026, 11, 1, 2, 20, 11), from: 'fenced', state: 'healthy', previousSeconds: 368, reason: '3 consecutive heartbeats'},
            {at: now - 10_000, from: 'healthy', state: 'fenced', previousSeconds: 40, reason: why},
          ]},
          {...reporter, name: 'binlog', state: 'healthy', fencedSince: null, reason: '3 consecutive heartbeats', history: [
            {at: Date.UTC(2026, 11, 1, 2, 14, 4), from: 'healthy', state: 'fenced', previousSeconds: null, reason: 'no heartbeat for 10.0 s'},
          ]},
        ]});
      const result = await run(['status', `--state-dir=${dir}`, '--history']);
      assert.equal(result.code, 0);
      assert.ok(result.stdout.includes(`\n  why: ${why}\n`), result.stdout);
      const history = result.stdout.slice(result.stdout.indexOf('history ('));
      assert.deepEqual(history.split('\n').slice(1, 6).map(line => line.replace(/\s+/g, ' ')), [
        'TIME REPORTER CHANGE AFTER REASON',
        '2026-12-01T02:14:03.000Z mysql healthy -> fenced 3d4h no heartbeat for 10.0 s',
        '2026-12-01T02:14:04.000Z binlog healthy -> fenced - no heartbeat for 10.0 s',
        '2026-12-01T02:20:11.000Z mysql fenced -> healthy 6m8s 3 consecutive heartbeats',
        `${new Date(now - 10_000).toISOString()} mysql healthy -> fenced 40.0s ${why}`,
      ]);
      const json = JSON.parse((await run(['status', `--state-dir=${dir}`, '--json'])).stdout) as {reporters: Array<{history: Array<unknown>}>};
      assert.equal(json.reporters[0]!.history.length, 3, '--json carries the history');
    } finally {
      await cleanup();
    }
  });

  for (const verb of ['monitor', 'report', 'status', 'unblock']) {
    it(`${verb} --help shows usage with examples`, async () => {
      const result = await run([verb, '--help']);
      assert.equal(result.code, 0);
      assert.match(result.stdout, /Examples/);
      assert.match(result.stdout, new RegExp(`\\$ ebsmon ${verb}`));
    });
  }
});

describe('the built dist/ebsmon', () => {
  it('prints its version', async () => {
    const result = await ebsmonOnce(['--version']);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /^\d+\.\d+\.\d+\n$/);
  });

  it('prints help listing the four verbs', async () => {
    const result = await ebsmonOnce(['--help']);
    assert.equal(result.code, 0);
    for (const verb of ['monitor', 'report', 'status', 'unblock'])
      assert.match(result.stdout, new RegExp(`ebsmon ${verb}`));
  });

  it('exits 2 on a bad flag, with the message on stderr', async () => {
    const result = await ebsmonOnce(['monitor', '--timeout=-1']);
    assert.equal(result.code, 2);
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /Invalid value for --timeout: expected a positive number of seconds, e\.g\. 0\.5 \(got "-1"\)/);
  });

  it('unblock exits 1, naming the reporter, when a monitor reads the request but the fence stays', async () => {
    const {path: dir, cleanup} = await tmpDir({unsafeCleanup: true});
    try {
      // A reader that never acts on what it reads, and a fresh snapshot saying www is fenced.
      const fifo = path.join(dir, 'ebsmon.fifo');
      ensureFifo(fifo);
      const lines: Array<Message> = [];
      const decoder = new LineDecoder({onMessage: m => lines.push(m), onReject: () => {}});
      const reader = openFifoReader(fifo, chunk => decoder.push(chunk));
      const now = Date.now();
      writeSnapshot(dir, {v: 1, monitor: {pid: process.pid, startedAt: now, writtenAt: now, timeout: 10, recover: 3, protectPorts: [22], heartbeats: 1, linesRejected: {}, firewallOk: true},
        reporters: [{name: 'www', pid: 1, ports: [80], state: 'fenced', lastHeartbeatAt: now - 20_000, fencedSince: now - 10_000, overriddenAt: null, overriddenBy: null,
          fenceCount: 1, flapCount: 0, heartbeats: 1, lastProbeMs: 1, interval: 1, probeTimeout: 3, reason: 'no heartbeat for 10.0 s'}]});
      try {
        const result = await ebsmonOnce(['unblock', '--reporter=www', `--fifo=${fifo}`, `--state-dir=${dir}`, '--wait=0.5']);
        assert.equal(result.code, 1);
        assert.equal(result.stdout, '');
        assert.match(result.stderr, /the monitor has not lifted the fence of www within 0\.5 s \(still fenced in its snapshot\); see its log\n$/);
        await waitFor('the request read', () => lines.length === 1);
        assert.deepEqual({...lines[0], pid: 0, user: ''}, {v: 1, kind: 'unblock', name: 'www', pid: 0, user: ''});
      } finally {
        reader.close();
      }
    } finally {
      await cleanup();
    }
  });
});
