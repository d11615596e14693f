import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {DEVICE_NAME_MAX, LineDecoder, MAX_LINE_BYTES, MAX_PATHS, MAX_PORTS, MessageTooLargeError, PATH_FIELD_MAX, REASON_MAX, decodeLine, encodeMessage} from '../../src/heartbeat';
import type {DeviceStats, Failing, Heartbeat, Message, RejectReason} from '../../src/heartbeat';

const heartbeat: Heartbeat = {v: 1, kind: 'heartbeat', name: 'mysql', pid: 4242, ports: [3306], interval: 1, probeTimeout: 3, seq: 17, sentAt: 1763700000000, probeMs: 2.4};
const mysqlPath = {path: '/var/lib/mysql', device: '259:1', source: '/dev/nvme1n1', fstype: 'ext4', mountPoint: '/var/lib/mysql'};
const withPaths: Heartbeat = {...heartbeat, paths: [mysqlPath, {path: '/var/lib/mysql-binlog', device: '259:2', source: '/dev/nvme2n1', fstype: 'xfs', mountPoint: '/var/lib/mysql-binlog'}]};
const nvme: DeviceStats = {device: '259:1', name: 'nvme1n1', inflight: 14, ios: 123456789, windowMs: 1000, done: 0, busyMs: 1000, quietMs: 4000};
const withDevices: Heartbeat = {...withPaths, devices: [{...nvme, done: 2140, awaitMs: 1.93, quietMs: 0}, {...nvme, device: '259:2', name: 'nvme2n1'}]};
const failing: Failing = {v: 1, kind: 'failing', name: 'mysql', pid: 4242, sentAt: 1763700000000, reason: 'probe of /var/lib/mysql timed out after 3.0 s; nvme1n1: 14 requests in flight, none completed for 4.0 s', devices: [nvme]};

function collect() {
  const messages: Array<Message> = [];
  const rejected: Array<RejectReason> = [];
  const decoder = new LineDecoder({onMessage: m => messages.push(m), onReject: r => rejected.push(r.reason)});
  return {decoder, messages, rejected};
}

describe('encodeMessage / decodeLine', () => {
  const roundTrips: Array<Message> = [
    heartbeat,
    withPaths,
    withDevices,
    failing,
    {v: 1, kind: 'failing', name: 'web', pid: 1, sentAt: 1, reason: 'check `curl -fsS http://localhost/health` exited 22: curl: (22) The requested URL returned error: 503'},
    {...heartbeat, ports: [80, 443], name: 'www.example_1-2'},
    {v: 1, kind: 'goodbye', name: 'mysql', pid: 4242},
    {v: 1, kind: 'unblock', name: 'mysql', pid: 5151, user: 'root'},
    {v: 1, kind: 'unblock', all: true, pid: 5151, user: 'root'},
  ];
  for (const message of roundTrips) {
    it(`round-trips a ${message.kind} ${JSON.stringify(message).slice(0, 60)}`, () => {
      const line = encodeMessage(message);
      assert.equal(line.at(-1), 0x0a);
      const decoded = decodeLine(line.subarray(0, -1));
      assert.deepEqual(decoded, {ok: true, message});
    });
  }

  it('keeps the largest heartbeat the limits allow within PIPE_BUF', () => {
    const long = (n: number) => `/${'p'.repeat(n - 1)}`;
    const largest: Heartbeat = {
      ...heartbeat, name: 'n'.repeat(64), pid: 4194304, ports: Array.from({length: MAX_PORTS}, (_, i) => 65535 - i),
      interval: 86400, probeTimeout: 86400, seq: Number.MAX_SAFE_INTEGER, sentAt: 9999999999999, probeMs: 86400000.99,
      paths: Array.from({length: MAX_PATHS}, () => ({path: long(PATH_FIELD_MAX.path), device: '4095:1048575', source: long(PATH_FIELD_MAX.source), fstype: 'f'.repeat(PATH_FIELD_MAX.fstype), mountPoint: long(PATH_FIELD_MAX.mountPoint)})),
    };
    const line = encodeMessage(largest);
    assert.ok(line.length <= MAX_LINE_BYTES, `${line.length} bytes`);
    assert.deepEqual(decodeLine(line.subarray(0, -1)), {ok: true, message: largest});
  });

  it('keeps the largest failing word within PIPE_BUF when its reason is ASCII (the reporter cuts any other to fit)', () => {
    const largest: Failing = {
      ...failing, name: 'n'.repeat(64), pid: 4194304, sentAt: 9999999999999, reason: 'r'.repeat(REASON_MAX),
      devices: Array.from({length: MAX_PATHS}, () => ({device: '4095:1048575', name: 'd'.repeat(DEVICE_NAME_MAX), inflight: 2 ** 31, ios: Number.MAX_SAFE_INTEGER, windowMs: 86_400_000.25, done: 2 ** 40, busyMs: 86_400_000.25, awaitMs: 1e9 + 0.25, quietMs: 1e12 + 0.25})),
    };
    assert.ok(encodeMessage(largest).length <= MAX_LINE_BYTES, `${encodeMessage(largest).length} bytes`);
  });

  it('refuses to encode a message larger than PIPE_BUF', () => {
    assert.throws(() => encodeMessage({v: 1, kind: 'unblock', name: 'x', pid: 1, user: 'u'.repeat(5000)}), MessageTooLargeError);
  });

  const rejections: Array<[string, string, RejectReason]> = [
    ['not JSON', '{"v":1,', 'malformed'],
    ['a JSON array', '[1,2]', 'malformed'],
    ['a JSON string', '"hello"', 'malformed'],
    ['null', 'null', 'malformed'],
    ['unknown version', JSON.stringify({...heartbeat, v: 2}), 'version'],
    ['no version', JSON.stringify({...heartbeat, v: undefined}), 'version'],
    ['unknown kind', JSON.stringify({...heartbeat, kind: 'reboot'}), 'kind'],
    ['kind of the prototype', JSON.stringify({...heartbeat, kind: 'toString'}), 'kind'],
    ['a name with a shell command', JSON.stringify({...heartbeat, name: '"; touch /tmp/x; "'}), 'name'],
    ['a name with $(id)', JSON.stringify({...heartbeat, name: '$(id)'}), 'name'],
    ['an empty name', JSON.stringify({...heartbeat, name: ''}), 'name'],
    ['a 65-character name', JSON.stringify({...heartbeat, name: 'a'.repeat(65)}), 'name'],
    ['port 0', JSON.stringify({...heartbeat, ports: [0]}), 'ports'],
    ['port 65536', JSON.stringify({...heartbeat, ports: [65536]}), 'ports'],
    ['a fractional port', JSON.stringify({...heartbeat, ports: [80.5]}), 'ports'],
    ['a port as a string', JSON.stringify({...heartbeat, ports: ['80']}), 'ports'],
    ['65 ports', JSON.stringify({...heartbeat, ports: Array.from({length: 65}, (_, i) => i + 1)}), 'ports'],
    ['no ports', JSON.stringify({...heartbeat, ports: []}), 'ports'],
    ['a missing pid', JSON.stringify({...heartbeat, pid: undefined}), 'invalid'],
    ['an extra field', JSON.stringify({...heartbeat, extra: 1}), 'invalid'],
    ['a negative interval', JSON.stringify({...heartbeat, interval: -1}), 'invalid'],
    ['paths: an empty list', JSON.stringify({...heartbeat, paths: []}), 'invalid'],
    ['paths: more than MAX_PATHS', JSON.stringify({...heartbeat, paths: Array.from({length: MAX_PATHS + 1}, () => mysqlPath)}), 'invalid'],
    ['paths: a path longer than its limit', JSON.stringify({...heartbeat, paths: [{...mysqlPath, path: `/${'x'.repeat(PATH_FIELD_MAX.path)}`}]}), 'invalid'],
    ['paths: a device that is not major:minor', JSON.stringify({...heartbeat, paths: [{...mysqlPath, device: 'nvme1n1'}]}), 'invalid'],
    ['paths: a missing fstype', JSON.stringify({...heartbeat, paths: [{...mysqlPath, fstype: undefined}]}), 'invalid'],
    ['paths: an extra field in a path', JSON.stringify({...heartbeat, paths: [{...mysqlPath, mountId: 30}]}), 'invalid'],
    ['paths: not a list', JSON.stringify({...heartbeat, paths: mysqlPath}), 'invalid'],
    ['devices: an empty list', JSON.stringify({...heartbeat, devices: []}), 'invalid'],
    ['devices: a negative count', JSON.stringify({...heartbeat, devices: [{...nvme, inflight: -1}]}), 'invalid'],
    ['devices: a name longer than the kernel\'s', JSON.stringify({...heartbeat, devices: [{...nvme, name: 'n'.repeat(DEVICE_NAME_MAX + 1)}]}), 'invalid'],
    ['devices: an extra field', JSON.stringify({...heartbeat, devices: [{...nvme, util: 1}]}), 'invalid'],
    ['failing: an empty reason', JSON.stringify({...failing, reason: ''}), 'invalid'],
    ['failing: a reason over its limit', JSON.stringify({...failing, devices: undefined, reason: 'r'.repeat(REASON_MAX + 1)}), 'invalid'],
    ['failing: no pid', JSON.stringify({...failing, pid: undefined}), 'invalid'],
    ['failing: ports (it asks for nothing)', JSON.stringify({...failing, ports: [3306]}), 'ports'],
    ['an unblock naming both a reporter and all', JSON.stringify({v: 1, kind: 'unblock', name: 'a', all: true, pid: 1, user: 'r'}), 'invalid'],
  ];
  for (const [what, line, reason] of rejections) {
    it(`rejects ${what} as ${reason}`, () => {
      const result = decodeLine(line);
      assert.equal(result.ok, false);
      assert.equal(!result.ok && result.rejection.reason, reason);
    });
  }
});

describe('LineDecoder', () => {
  it('decodes lines split across chunks at every byte', () => {
    const line = encodeMessage(heartbeat);
    for (let cut = 1; cut < line.length; cut++) {
      const {decoder, messages} = collect();
      decoder.push(line.subarray(0, cut));
      decoder.push(line.subarray(cut));
      assert.equal(messages.length, 1, `cut at ${cut}`);
    }
  });

  it('skips a 200 KB line without buffering it and decodes the next one', () => {
    const {decoder, messages, rejected} = collect();
    decoder.push(Buffer.from('abc'));
    const big = Buffer.alloc(200 * 1024, 0x61);
    for (let i = 0; i < big.length; i += 1000)
      decoder.push(big.subarray(i, i + 1000));
    decoder.push(Buffer.from('\n'));
    decoder.push(Buffer.from([0x00, 0xff, 0xfe, 0x0a]));
    decoder.push(encodeMessage(heartbeat));
    assert.deepEqual(messages, [heartbeat]);
    assert.deepEqual(rejected, ['oversize', 'malformed']);
    assert.equal(decoder.counters.oversize, 1);
    assert.equal(decoder.counters.accepted, 1);
  });

  it('accepts a line of exactly 4096 bytes and rejects one of 4097', () => {
    const pad = (n: number) => {
      const base = JSON.stringify({v: 1, kind: 'unblock', name: 'x', pid: 1, user: ''});
      return `${base.slice(0, -2)}${'u'.repeat(n - base.length)}"}`;
    };
    const fits = pad(MAX_LINE_BYTES - 1);
    assert.equal(Buffer.byteLength(`${fits}\n`), MAX_LINE_BYTES);
    const {decoder, rejected} = collect();
    decoder.push(Buffer.from(`${fits}\n`));
    assert.deepEqual(rejected, ['invalid']); // decoded, then refused by the 64-character user limit
    decoder.push(Buffer.from(`${pad(MAX_LINE_BYTES)}\n`));
    assert.deepEqual(rejected, ['invalid', 'oversize']);
  });

  it('counts a trailing partial line at the end', () => {
    const {decoder, rejected} = collect();
    decoder.push(encodeMessage(heartbeat).subarray(0, 20));
    decoder.end();
    assert.deepEqual(rejected, ['partial']);
  });

  it('never throws and never loses the next valid line (random bytes and random JSON)', () => {
    let seed = 12345;
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const randomJson = (depth = 0): unknown => {
      const r = random();
      if (depth > 3 || r < 0.2)
        return Math.floor(random() * 70000) - 10;
      if (r < 0.35)
        return 'x'.repeat(Math.floor(random() * 10));
      if (r < 0.45)
        return random() < 0.5;
      if (r < 0.55)
        return null;
      if (r < 0.75)
        return Array.from({length: Math.floor(random() * 4)}, () => randomJson(depth + 1));
      const keys = ['v', 'kind', 'name', 'pid', 'ports', 'all', 'user', 'seq'];
      return Object.fromEntries(keys.filter(() => random() < 0.6).map(k => [k, k === 'kind' ? ['heartbeat', 'goodbye', 'unblock'][Math.floor(random() * 3)] : k === 'v' ? 1 : randomJson(depth + 1)]));
    };
    for (let round = 0; round < 3000; round++) {
      const {decoder, messages} = collect();
      const junk = random() < 0.5
        ? Buffer.from(Array.from({length: Math.floor(random() * 300)}, () => Math.floor(random() * 256)))
        : Buffer.from(JSON.stringify(randomJson()));
      decoder.push(junk);
      decoder.push(Buffer.from('\n'));
      decoder.push(encodeMessage(heartbeat));
      assert.equal(messages.at(-1) !== undefined && JSON.stringify(messages.at(-1)), JSON.stringify(heartbeat), `round ${round}`);
    }
  });
});
