// Shared by the benchmark steps: statistics, output, and /proc readings.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export type Stat = {median: number, min: number, max: number, p99?: number, n: number};
export const stat = (values: Array<number>): Stat => {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return {median: at(0.5), min: sorted[0]!, max: sorted.at(-1)!, p99: at(0.99), n: values.length};
};
export const fmt = (s: Stat, unit: string, digits = 1) => `median ${s.median.toFixed(digits)} ${unit} (min ${s.min.toFixed(digits)}, max ${s.max.toFixed(digits)}, p99 ${s.p99!.toFixed(digits)}, n=${s.n})`;
export const results: Record<string, unknown> = {date: new Date().toISOString(), machine: `${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.release()}, node ${process.version}`};
export const line = (label: string, text: string) => process.stdout.write(`${label.padEnd(48)} ${text}\n`);

/** Memory not shared with other processes (RSS also counts node's own code pages, shared by every node process). */
export const privateKb = (pid: number) => {
  const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? 0);
  return field('Private_Clean') + field('Private_Dirty');
};
export const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
/** CPU ticks (1/100 s) of the process; with children, also of its reaped children (the probe's dd). */
export const cpuTicks = (pid: number, {children = false}: {children?: boolean} = {}) => {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]) + (children ? Number(fields[13]) + Number(fields[14]) : 0);
};


/** Proportional set size: shared pages (the executable's code, mapped by every process of it) divided among their users. */
export const pssKb = (pid: number) => Number(/^Pss:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
/** Anonymous memory (heaps, stacks): what no other process can share. */
export const anonKb = (pid: number) => Number(/RssAnon:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
/** Resident pages of the process's own executable file (node, or the standalone executable). */
export const exeKb = (pid: number) => {
  const exe = fs.readlinkSync(`/proc/${pid}/exe`);
  let inExe = false;
  let kb = 0;
  for (const text of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s+(.*)$/.exec(text);
    if (mapping !== null)
      inExe = mapping[1] === exe;
    else if (inExe && text.startsWith('Rss:'))
      kb += Number(/\d+/.exec(text)?.[0] ?? 0);
  }
  return kb;
};

/** CPU time of one live thread group, in nanoseconds: the scheduler's own sum (/proc/PID/sched), not 10 ms ticks. */
export const cpuNs = (pid: number) => {
  const text = fs.readFileSync(`/proc/${pid}/sched`, 'utf8');
  return Math.round(Number(/^se\.sum_exec_runtime\s*:\s*([\d.]+)/m.exec(text)?.[1] ?? 0) * 1e6);
};

/**
 * CPU of a whole process tree, children that came and went included, to the
 * nanosecond: a cgroup made for it (cgroup v1 cpuacct, or v2), which the
 * measured command joins before it execs. Ticks of /proc/PID/stat are 10 ms:
 * too coarse for a reporter that spends well under a millisecond a tick.
 */
export class CpuGroup {
  private constructor(private readonly dir: string, private readonly usage: () => number) {
  }

  static create(name: string): CpuGroup {
    const v1 = '/sys/fs/cgroup/cpuacct';
    if (fs.existsSync(path.join(v1, 'cpuacct.usage'))) {
      const dir = path.join(v1, name);
      fs.mkdirSync(dir);
      return new CpuGroup(dir, () => Number(fs.readFileSync(path.join(dir, 'cpuacct.usage'), 'utf8')));
    }
    const dir = path.join('/sys/fs/cgroup', name);
    fs.mkdirSync(dir);
    return new CpuGroup(dir, () => Number(/^usage_usec (\d+)/m.exec(fs.readFileSync(path.join(dir, 'cpu.stat'), 'utf8'))?.[1] ?? 0) * 1000);
  }

  /** Put before a command line: it joins the group, then execs the command. */
  get prefix(): Array<string> {
    return ['sh', '-c', `echo $$ > ${this.dir}/cgroup.procs && exec "$@"`, 'cpu-group'];
  }

  /** Milliseconds of CPU (user + system) of everything that ran in the group. */
  ms(): number {
    return this.usage() / 1e6;
  }

  pids(): Array<number> {
    return fs.readFileSync(path.join(this.dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  }

  /** Once every process in it has exited. */
  remove(): void {
    try {
      fs.rmdirSync(this.dir);
    } catch {}
  }
}
