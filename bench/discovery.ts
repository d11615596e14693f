// The discovery scan's cost: one re-scan of a process holding 10 000 files open, as the reporter runs it (a perl per scan).
import {spawn, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {SCAN_SCRIPT, parseScan} from '../src/discovery';
import {LoopVolume} from '../test/helpers/rig';
import {fmt, line, results, stat} from './stats';

const RUNS = 30;

/** CPU (user + system, ms) of one command and its children, from bash's `times` (getrusage of its children, to the millisecond). */
function childCpuMs(argv: ReadonlyArray<string>): number {
  const q = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
  const out = spawnSync('bash', ['-c', `${argv.map(q).join(' ')} >/dev/null; times`], {encoding: 'utf8'}).stdout;
  const children = out.trim().split('\n')[1] ?? '';
  const seconds = [...children.matchAll(/(\d+)m([\d.]+)s/g)].map(m => Number(m[1]) * 60 + Number(m[2]));
  return (seconds[0]! + seconds[1]!) * 1000;
}

export async function discoveryCost(volume: LoopVolume, dir: string): Promise<void> {
  const script = path.join(dir, 'scan.pl');
  fs.writeFileSync(script, SCAN_SCRIPT);
  const files = path.join(volume.mountpoint, 'many-files');
  fs.mkdirSync(files, {recursive: true});
  for (const [opened, label, mode] of [[100, 'O_RDWR', '+<'], [10_000, 'O_RDWR (a database\'s tables)', '+<'], [10_000, 'read-only', '<']] as const) {
    // A holder with that many descriptors open (its limit raised for it), as a database with its tables open.
    const holder = spawn('bash', ['-c', `ulimit -n ${opened + 100}; exec perl -e '$| = 1; my @h; for my $i (1 .. ${opened}) { my $f = "$ARGV[0]/f$i"; open(my $t, ">>", $f) or die; close $t; open(my $h, "${mode}", $f) or die "$f: $!"; push @h, $h } print "ready\\n"; sleep 600' '${files}'`], {stdio: ['ignore', 'pipe', 'inherit']});
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.on('data', () => resolve());
        holder.on('exit', code => reject(new Error(`the holder exited ${code}`)));
      });
      const report = parseScan(spawnSync('perl', [script, 'pid', String(holder.pid)], {encoding: 'utf8', maxBuffer: 1 << 24}).stdout);
      const written = report.written.reduce((n, w) => n + w.count, 0);
      const cpu = stat(Array.from({length: RUNS}, () => childCpuMs(['perl', script, 'pid', String(holder.pid)])));
      const wall = stat(Array.from({length: RUNS}, () => {
        const t0 = performance.now();
        spawnSync('perl', [script, 'pid', String(holder.pid)], {stdio: 'ignore'});
        return performance.now() - t0;
      }));
      line(`discovery re-scan, ${opened} files ${label}`, `CPU ${fmt(cpu, 'ms', 1)}`);
      line('  wall time, perl start-up included', fmt(wall, 'ms', 1));
      line('  files counted as written', String(written));
      results[`discoveryScan_${opened}_${mode === '<' ? 'readOnly' : 'readWrite'}`] = {files: opened, written, cpuMs: cpu, wallMs: wall};
    } finally {
      holder.kill('SIGKILL');
    }
  }
  const startup = stat(Array.from({length: RUNS}, () => childCpuMs(['perl', '-e', '1'])));
  line('  of which perl start-up alone (perl -e 1)', `CPU ${fmt(startup, 'ms', 1)}`);
  results.discoveryPerlStartupCpuMs = startup;
  fs.rmSync(files, {recursive: true, force: true});
}
