// One fence cycle as an SVG, from the data bench/picture.ts records: no
// numbers placed by hand, every mark computed from the recording. Linear
// scales with "nice" ticks (1, 2 or 5 times a power of ten), the approach of
// d3-scale, written out here for a picture that needs nothing else.

/** What one recorded cycle holds; times are milliseconds from the start of the window. */
export type CycleRecording = {
  recorded: string;
  machine: string;
  settings: {backend: string, interval: number, timeout: number, recover: number, probeTimeout: number};
  /** The window shown: 0 to durationMs. */
  durationMs: number;
  /** Each heartbeat the reporter sent, and the latency of the probe behind it. */
  heartbeats: Array<{t: number, probeMs: number}>;
  /** A remote client connecting over and over: each change of outcome. */
  client: Array<{t: number, state: string}>;
  /** When the reporter said a probe failed (it had not finished within --probe-timeout). */
  probeFailures: Array<{t: number}>;
  events: {freeze: number, fence: number, thaw: number, unfence: number};
};

const WIDTH = 900;
const MARGIN = {left: 92, right: 24, top: 52, bottom: 62};
const PANEL = {latency: 150, beats: 34, fence: 34, client: 34};
const GAP = 14;
const COLORS = {ok: '#2e7d32', refused: '#c62828', other: '#757575', beat: '#1565c0', fence: '#c62828', marker: '#424242', grid: '#e0e0e0', text: '#212121'};

/** The step between about `count` ticks over [lo, hi]: 1, 2 or 5 times a power of ten, the one nearest to an even split (as d3-array's tickIncrement). */
export function tickStep(lo: number, hi: number, count: number): {factor: number, power: number} {
  const raw = (hi - lo) / Math.max(1, count);
  const power = Math.floor(Math.log10(raw));
  const error = raw / 10 ** power;
  const factor = error >= Math.sqrt(50) ? 10 : error >= Math.sqrt(10) ? 5 : error >= Math.sqrt(2) ? 2 : 1;
  return {factor, power};
}

/** The ticks inside [lo, hi]; a negative power divides, so 0.3 is 0.3 and not 0.30000000000000004. */
export function niceTicks(lo: number, hi: number, count: number): Array<number> {
  const {factor, power} = tickStep(lo, hi, count);
  const at = power < 0 ? (i: number) => (i * factor) / 10 ** -power : (i: number) => i * factor * 10 ** power;
  const step = factor * 10 ** power;
  const out: Array<number> = [];
  for (let i = Math.ceil(lo / step - 1e-9); at(i) <= hi + step * 1e-9; i++)
    out.push(at(i) + 0); // + 0: never -0
  return out;
}

/** [0, hi] widened to the next tick, so the largest value sits inside the axis. */
export function niceMax(hi: number, count: number): number {
  const {factor, power} = tickStep(0, hi, count);
  const step = factor * 10 ** power;
  return Math.ceil(hi / step - 1e-9) * step;
}

export function linear(domain: [number, number], range: [number, number]): (v: number) => number {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  return v => r0 + (d1 === d0 ? 0 : ((v - d0) / (d1 - d0)) * (r1 - r0));
}

const f1 = (n: number) => (Math.round(n * 10) / 10).toString();
const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const text = (x: number, y: number, content: string, attrs = '') => `<text x="${f1(x)}" y="${f1(y)}"${attrs === '' ? '' : ` ${attrs}`}>${escape(content)}</text>`;

/** Consecutive heartbeats no further apart than `gapMs`. */
function runsOf<T extends {t: number}>(points: ReadonlyArray<T>, gapMs: number): Array<Array<T>> {
  const runs: Array<Array<T>> = [];
  for (const point of points) {
    const run = runs.at(-1);
    if (run !== undefined && point.t - run.at(-1)!.t <= gapMs)
      run.push(point);
    else
      runs.push([point]);
  }
  return runs;
}

export function renderCycle(data: CycleRecording): string {
  const plotRight = WIDTH - MARGIN.right;
  const x = linear([0, data.durationMs / 1000], [MARGIN.left, plotRight]);
  const xt = (ms: number) => x(ms / 1000);
  const top = {latency: MARGIN.top};
  const latencyBottom = top.latency + PANEL.latency;
  const beatsTop = latencyBottom + GAP;
  const fenceTop = beatsTop + PANEL.beats + GAP;
  const clientTop = fenceTop + PANEL.fence + GAP;
  const plotBottom = clientTop + PANEL.client;
  const height = plotBottom + MARGIN.bottom;

  const yMax = niceMax(Math.max(1, ...data.heartbeats.map(h => h.probeMs)), 4);
  const yTicks = niceTicks(0, yMax, 4);
  const y = linear([0, yMax], [latencyBottom, top.latency]);
  const out: Array<string> = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${f1(height)}" viewBox="0 0 ${WIDTH} ${f1(height)}" font-family="sans-serif" font-size="12" fill="${COLORS.text}">`);
  out.push(`<title>One fence cycle: ${escape(data.settings.backend)}, --interval=${data.settings.interval} --timeout=${data.settings.timeout} --recover=${data.settings.recover}; recorded ${escape(data.recorded)}</title>`);
  out.push(`<rect width="${WIDTH}" height="${f1(height)}" fill="#ffffff"/>`);
  out.push(text(MARGIN.left, 18, `One fence cycle, measured: ${data.settings.backend}, --interval=${data.settings.interval} --timeout=${data.settings.timeout} --recover=${data.settings.recover}`, 'font-size="13" font-weight="bold"'));

  // Time axis, grid across every panel.
  const xTicks = niceTicks(0, data.durationMs / 1000, 12);
  out.push('<g class="x-axis">');
  for (const tick of xTicks) {
    out.push(`<line x1="${f1(x(tick))}" x2="${f1(x(tick))}" y1="${top.latency}" y2="${f1(plotBottom)}" stroke="${COLORS.grid}"/>`);
    out.push(text(x(tick), plotBottom + 16, `${tick}`, 'text-anchor="middle"'));
  }
  out.push(text((MARGIN.left + plotRight) / 2, plotBottom + 30, 'seconds', 'text-anchor="middle"'));
  out.push('</g>');

  // Probe latency per heartbeat.
  out.push('<g class="latency">');
  for (const tick of yTicks) {
    out.push(`<line x1="${MARGIN.left}" x2="${plotRight}" y1="${f1(y(tick))}" y2="${f1(y(tick))}" stroke="${COLORS.grid}"/>`);
    out.push(text(MARGIN.left - 6, y(tick) + 4, `${tick}`, 'text-anchor="end"'));
  }
  out.push(text(14, (top.latency + latencyBottom) / 2, 'probe ms', `transform="rotate(-90 14 ${f1((top.latency + latencyBottom) / 2)})" text-anchor="middle"`));
  // One line per run of heartbeats: no line is drawn across the time none came.
  for (const run of runsOf(data.heartbeats, data.settings.interval * 1000 * 2))
    out.push(`<polyline class="latency-line" fill="none" stroke="${COLORS.beat}" stroke-width="1" points="${run.map(h => `${f1(xt(h.t))},${f1(y(h.probeMs))}`).join(' ')}"/>`);
  for (const h of data.heartbeats)
    out.push(`<circle class="beat-latency" cx="${f1(xt(h.t))}" cy="${f1(y(h.probeMs))}" r="2.5" fill="${COLORS.beat}"/>`);
  for (const failure of data.probeFailures) {
    out.push(`<path class="probe-failure" d="M${f1(xt(failure.t) - 4)},${f1(top.latency + 4)}l8,8m0,-8l-8,8" stroke="${COLORS.refused}" stroke-width="2"/>`);
    out.push(text(xt(failure.t) + 8, top.latency + 12, `probe timed out (${data.settings.probeTimeout} s)`, `font-size="11" fill="${COLORS.refused}"`));
  }
  out.push('</g>');

  // Heartbeats as ticks.
  out.push('<g class="heartbeats">');
  out.push(text(MARGIN.left - 6, beatsTop + PANEL.beats / 2 + 4, 'heartbeats', 'text-anchor="end"'));
  for (const h of data.heartbeats)
    out.push(`<line class="beat" x1="${f1(xt(h.t))}" x2="${f1(xt(h.t))}" y1="${f1(beatsTop + 4)}" y2="${f1(beatsTop + PANEL.beats - 4)}" stroke="${COLORS.beat}" stroke-width="2"/>`);
  out.push('</g>');

  // The fence, as the monitor logged it going up and coming down.
  out.push('<g class="fence">');
  out.push(text(MARGIN.left - 6, fenceTop + PANEL.fence / 2 + 4, 'fence', 'text-anchor="end"'));
  out.push(`<rect class="fenced" x="${f1(xt(data.events.fence))}" y="${f1(fenceTop + 4)}" width="${f1(xt(data.events.unfence) - xt(data.events.fence))}" height="${PANEL.fence - 8}" fill="${COLORS.fence}" fill-opacity="0.8"/>`);
  out.push(`<line x1="${MARGIN.left}" x2="${plotRight}" y1="${f1(fenceTop + PANEL.fence / 2)}" y2="${f1(fenceTop + PANEL.fence / 2)}" stroke="${COLORS.other}" stroke-dasharray="2,3"/>`);
  out.push('</g>');

  // What a remote client got, connecting over and over.
  out.push('<g class="client">');
  out.push(text(MARGIN.left - 6, clientTop + PANEL.client / 2 + 4, 'client', 'text-anchor="end"'));
  data.client.forEach((change, i) => {
    const end = data.client[i + 1]?.t ?? data.durationMs;
    const color = change.state === 'ok' ? COLORS.ok : change.state === 'refused' ? COLORS.refused : COLORS.other;
    out.push(`<rect class="client-${change.state === 'ok' || change.state === 'refused' ? change.state : 'error'}" x="${f1(xt(Math.max(0, change.t)))}" y="${f1(clientTop + 4)}" width="${f1(Math.max(0.5, xt(end) - xt(Math.max(0, change.t))))}" height="${PANEL.client - 8}" fill="${color}"><title>${escape(change.state)} from ${f1(change.t / 1000)} s</title></rect>`);
  });
  out.push('</g>');

  // The four moments, across every panel.
  const labels: Array<[keyof CycleRecording['events'], string]> = [['freeze', 'freeze'], ['fence', 'fence'], ['thaw', 'thaw'], ['unfence', 'unfence']];
  out.push('<g class="markers">');
  labels.forEach(([key, label], i) => {
    const at = xt(data.events[key]);
    out.push(`<line id="marker-${key}" x1="${f1(at)}" x2="${f1(at)}" y1="${top.latency - 6}" y2="${f1(plotBottom)}" stroke="${COLORS.marker}" stroke-width="1.2" stroke-dasharray="5,3"/>`);
    // Alternate heights: two moments a second apart do not overwrite each other.
    out.push(text(at + 3, top.latency - 20 + (i % 2) * 11, `${label} ${f1(data.events[key] / 1000)} s`, 'font-size="11"'));
  });
  out.push('</g>');

  // Legend.
  const legendY = height - 8;
  const legend: Array<[string, string]> = [[COLORS.beat, 'heartbeat and its probe latency'], [COLORS.fence, 'fenced (monitor\'s log)'], [COLORS.ok, 'remote client connects'], [COLORS.refused, 'client refused (TCP reset)']];
  let lx = MARGIN.left;
  out.push('<g class="legend">');
  for (const [color, label] of legend) {
    out.push(`<rect x="${lx}" y="${legendY - 9}" width="10" height="10" fill="${color}"/>`);
    out.push(text(lx + 14, legendY, label));
    // About 6.8 px a character at 12 px sans-serif.
    lx += 24 + label.length * 6.8;
  }
  out.push('</g>');
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
