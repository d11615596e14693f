import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {describe, it} from 'node:test';

import {linear, niceMax, niceTicks, renderCycle} from '../../bench/svg';
import type {CycleRecording} from '../../bench/svg';
import {ROOT} from '../helpers/rig';

// The README's picture and the run it was drawn from (make bench, step 'picture').
const JSON_FILE = path.join(ROOT, 'bench', 'fence-cycle.json');
const SVG_FILE = path.join(ROOT, 'bench', 'fence-cycle.svg');
const data = JSON.parse(fs.readFileSync(JSON_FILE, 'utf8')) as CycleRecording;
const svg = renderCycle(data);

/** The attributes of every element of `tag` with `class`. */
function elements(tag: string, cls: string): Array<Record<string, string>> {
  return [...svg.matchAll(new RegExp(`<${tag} class="${cls}"([^>]*)>`, 'g'))].map(m => Object.fromEntries([...m[1]!.matchAll(/([\w-]+)="([^"]*)"/g)].map(a => [a[1]!, a[2]!])));
}
const num = (value: string | undefined) => Number(value);

describe('the fence-cycle picture (bench/fence-cycle.svg)', () => {
  it('is recorded from a real cycle: freeze, fence, thaw, unfence in order, the fence a --timeout after the last heartbeat', () => {
    const {freeze, fence, thaw, unfence} = data.events;
    assert.ok(freeze < fence && fence < thaw && thaw < unfence, JSON.stringify(data.events));
    const lastBefore = data.heartbeats.filter(h => h.t < fence).at(-1)!;
    assert.ok(Math.abs(fence - lastBefore.t - data.settings.timeout * 1000) < 200, `fence ${fence - lastBefore.t} ms after the last heartbeat`);
    assert.equal(data.heartbeats.filter(h => h.t > freeze + data.settings.interval * 1000 && h.t < thaw).length, 0, 'no heartbeat while frozen');
    assert.ok(data.heartbeats.filter(h => h.t > thaw && h.t <= unfence + 50).length >= data.settings.recover, '--recover heartbeats before the fence is lifted');
    const refused = data.client.filter(c => c.state === 'refused');
    assert.equal(refused.length, 1, 'the client was refused once, for the whole fence');
    assert.ok(Math.abs(refused[0]!.t - fence) < 100, `refused ${refused[0]!.t - fence} ms after the fence`);
    const okAgain = data.client.find(c => c.t > refused[0]!.t && c.state === 'ok')!;
    assert.ok(okAgain.t >= unfence - 100 && okAgain.t - unfence < 100, `ok again ${okAgain.t - unfence} ms after the unfence`);
  });

  it('in the repository is exactly what the recording draws', () => {
    assert.equal(fs.readFileSync(SVG_FILE, 'utf8'), svg);
  });

  it('draws every series from the data: a latency point and a tick per heartbeat, the fence, each client outcome, the four moments', () => {
    const points = elements('circle', 'beat-latency');
    const ticks = elements('line', 'beat');
    assert.equal(points.length, data.heartbeats.length);
    assert.equal(ticks.length, data.heartbeats.length);
    // The latency line breaks where no heartbeat came: before the fence, and after the thaw.
    const lines = elements('polyline', 'latency-line').map(l => l.points!.split(' ').length);
    assert.equal(lines.length, 2);
    assert.equal(lines[0]! + lines[1]!, data.heartbeats.length);
    assert.equal(lines[0], data.heartbeats.filter(h => h.t < data.events.freeze).length);
    // One scale for every series: positions are proportional to the recorded times.
    const x = (ms: number) => num(points[0]!.cx) + (ms - data.heartbeats[0]!.t) * (num(points.at(-1)!.cx) - num(points[0]!.cx)) / (data.heartbeats.at(-1)!.t - data.heartbeats[0]!.t);
    data.heartbeats.forEach((h, i) => {
      assert.ok(Math.abs(num(points[i]!.cx) - x(h.t)) < 0.2, `heartbeat ${i}`);
      assert.equal(ticks[i]!.x1, points[i]!.cx);
    });
    // Higher latency, higher point.
    const slowest = data.heartbeats.reduce((best, h, i) => (h.probeMs > data.heartbeats[best]!.probeMs ? i : best), 0);
    assert.equal(Math.min(...points.map(p => num(p.cy))), num(points[slowest]!.cy));
    const [band] = elements('rect', 'fenced');
    assert.ok(Math.abs(num(band!.x) - x(data.events.fence)) < 0.2);
    assert.ok(Math.abs(num(band!.x) + num(band!.width) - x(data.events.unfence)) < 0.2);
    const client = [...svg.matchAll(/<rect class="client-(ok|refused|error)" x="([\d.]+)"/g)];
    assert.deepEqual(client.map(c => c[1]), data.client.map(c => (c.state === 'ok' || c.state === 'refused' ? c.state : 'error')));
    client.forEach((c, i) => assert.ok(Math.abs(num(c[2]) - x(Math.max(0, data.client[i]!.t))) < 0.2, `client change ${i}`));
    for (const key of ['freeze', 'fence', 'thaw', 'unfence'] as const) {
      const marker = new RegExp(`<line id="marker-${key}" x1="([\\d.]+)"`).exec(svg);
      assert.ok(marker !== null && Math.abs(num(marker[1]) - x(data.events[key])) < 0.2, key);
      assert.match(svg, new RegExp(`>${key} ${(Math.round(data.events[key] / 100) / 10).toString().replace('.', '\\.')} s<`));
    }
    assert.equal(elements('path', 'probe-failure').length, data.probeFailures.length);
  });

  it('puts ticks at 1, 2 or 5 times a power of ten, and maps linearly', () => {
    assert.deepEqual(niceTicks(0, 12.3, 12), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert.deepEqual(niceTicks(0, 9.2, 4), [0, 2, 4, 6, 8]);
    assert.deepEqual(niceTicks(0, 0.33, 4), [0, 0.1, 0.2, 0.3]);
    assert.equal(niceMax(15.77, 4), 20);
    assert.equal(niceMax(0.9, 4), 1);
    assert.equal(linear([0, 10], [100, 200])(2.5), 125);
  });
});
