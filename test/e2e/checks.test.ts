import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import type {Failing} from '../../src/heartbeat';
import {HungDisk} from '../helpers/hang';
import {countLogged, listen, logged} from '../helpers/listen';
import {ebsmon, ebsmonOnce} from '../helpers/proc';
import type {Proc} from '../helpers/proc';
import {descendants, isRoot, processState, requireRoot, waitFor} from '../helpers/rig';
import {useScratch} from '../helpers/suite';

/** Issue 16: --check, the service answers and not only its disk. */
describe('ebsmon report --check', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  const suite = useScratch();
  let data: string;

  before(() => {
    data = path.join(suite.dir, 'data');
    fs.mkdirSync(data);
  });

  const script = (name: string, body: string) => {
    const file = path.join(suite.dir, name);
    fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, {mode: 0o755});
    return file;
  };
  /** A reporter with checks, heartbeating into a FIFO the test reads; stopped whatever the body does. */
  const withReporter = async (tag: string, checks: Array<string>, body: (reporter: Proc, monitor: ReturnType<typeof listen>) => Promise<void>, probeTimeout = 0.6) => {
    const fifo = path.join(suite.dir, `${tag}.fifo`);
    const monitor = listen(fifo);
    const reporter = ebsmon(['report', `--monitor=${data}`, `--name=${tag}`, '--ports=3306', `--fifo=${fifo}`, '--interval=0.2', `--probe-timeout=${probeTimeout}`, '--log-level=debug', ...checks.map(c => `--check=${c}`)]);
    suite.track(reporter);
    try {
      await body(reporter, monitor);
    } finally {
      await reporter.stop();
      monitor.close();
    }
  };
  const said = (monitor: ReturnType<typeof listen>) => monitor.messages.filter((m): m is Failing => m.kind === 'failing');
  const alive = (pid: number) => ![null, 'Z'].includes(processState(pid));

  it('a check that exits 1 holds the heartbeats back, its output is the reason; exit 0 again resumes them', async (t: TestContext) => {
    requireRoot(t);
    const flag = path.join(suite.dir, 'down');
    const check = script('ping.sh', 'if [ -e "$1" ]; then echo "service says: down ($(cat "$1"))"; exit 1; fi\necho alive');
    await withReporter('ping', [`${check} ${flag}`], async (reporter, monitor) => {
      await waitFor('heartbeats', () => monitor.beats().length >= 3);
      fs.writeFileSync(flag, 'maintenance');
      const reason = `check \`${check} ${flag}\` exited 1: service says: down (maintenance)`;
      await waitFor('the failing word', () => said(monitor).some(m => m.reason === reason));
      const beats = monitor.beats().length;
      const words = said(monitor).length;
      await waitFor('three more failing words, one an interval', () => said(monitor).length >= words + 3);
      assert.equal(monitor.beats().length, beats, 'no heartbeat while the check fails, although the probe passes');
      assert.ok(logged(reporter, new RegExp(`^failing: ${reason.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}; no heartbeat until it passes$`)));
      fs.rmSync(flag);
      await waitFor('heartbeats again', () => monitor.beats().length >= beats + 2);
      assert.ok(logged(reporter, /^healthy again: heartbeats resume/));
    });
  });

  it('a check that hangs is killed with its process group at the deadline, and never stacked', async (t: TestContext) => {
    requireRoot(t);
    const runs = path.join(suite.dir, 'hang-runs');
    const children = path.join(suite.dir, 'hang-children');
    const check = script('hang.sh', `echo $$ >> ${runs}\nsleep 100 &\necho $! >> ${children}\nwait`);
    await withReporter('hang', [check], async (_reporter, monitor) => {
      const pids = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number) : []);
      let most = 0;
      await waitFor('five runs, each killed at its deadline', () => {
        most = Math.max(most, pids(runs).filter(alive).length);
        return pids(runs).length >= 5 && pids(runs).slice(0, 4).every(pid => !alive(pid));
      }, 30_000, 20);
      assert.equal(most, 1, 'never more than one run at a time');
      assert.ok(said(monitor).some(m => m.reason === `check \`${check}\` timed out after 0.6 s (killed with its process group)`));
      assert.equal(monitor.beats().length, 0, 'no heartbeat: the check never passed');
      await waitFor('what each run started killed with it', () => pids(children).slice(0, 4).every(pid => !alive(pid)));
    });
  });

  it('a check stuck in the kernel (D state, deaf to SIGKILL) is not started again until it is gone', async (t: TestContext) => {
    requireRoot(t);
    const disk = await HungDisk.create(suite.dir, suite.teardown, 32);
    suite.first(() => disk.resume());
    const file = path.join(disk.mountpoint, 'status');
    fs.writeFileSync(file, 'ok\n'.repeat(10_000));
    const readers = (reporter: Proc) => descendants(reporter.pid).filter(pid => {
      try {
        return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'dd';
      } catch {
        return false;
      }
    });
    // O_DIRECT: a buffered read waits killably for its page (SIGKILL ends it); a direct one waits for the device itself.
    const check = `dd if=${file} of=/dev/null bs=4096 count=1 iflag=direct status=none`;
    await withReporter('stuck', [check], async (reporter, monitor) => {
      await waitFor('heartbeats', () => monitor.beats().length >= 2);
      disk.hang();
      try {
        await waitFor('the check timed out', () => said(monitor).some(m => m.reason.startsWith(`check \`${check}\` timed out after 0.6 s`)));
        const stuck = readers(reporter);
        assert.equal(stuck.length, 1);
        assert.equal(processState(stuck[0]!), 'D');
        const refusals = countLogged(reporter, /^previous check still running; not starting another$/);
        await waitFor('ten more ticks', () => countLogged(reporter, /^previous check still running; not starting another$/) >= refusals + 10);
        assert.deepEqual(readers(reporter), stuck, 'the same one stuck run, nothing stacked on it');
      } finally {
        disk.resume();
      }
      const beats = monitor.beats().length;
      await waitFor('heartbeats once the disk answers', () => monitor.beats().length >= beats + 2);
    });
  });

  it('a check that prints 1 MB: exit 0 is healthy; on exit 1 the reason carries 4 KiB of it, and the word to the monitor fits one FIFO write', async (t: TestContext) => {
    requireRoot(t);
    const flag = path.join(suite.dir, 'loud-down');
    const check = script('loud.sh', `head -c 1048576 /dev/zero | tr '\\0' x\n[ -e ${flag} ] && exit 1\nexit 0`);
    await withReporter('loud', [check], async (reporter, monitor) => {
      await waitFor('heartbeats despite the output', () => monitor.beats().length >= 3);
      fs.writeFileSync(flag, '');
      await waitFor('the failing word', () => said(monitor).length >= 1);
      const word = said(monitor)[0]!;
      assert.match(word.reason, new RegExp(`^check \`${check}\` exited 1: x+\u2026$`));
      assert.ok(Buffer.byteLength(`${JSON.stringify(word)}\n`) <= 4096);
      const line = reporter.logs().find(l => String(l.message).startsWith('failing: check'))!;
      const output = /exited 1: (x+)\u2026; no heartbeat/.exec(String(line.message))?.[1] ?? '';
      assert.ok(output.length >= 4000 && output.length <= 4096, `${output.length} bytes of output in the log's reason`);
      fs.rmSync(flag);
      const beats = monitor.beats().length;
      await waitFor('heartbeats again', () => monitor.beats().length >= beats + 2);
    });
  });

  it('a check that is not executable, or not found, is refused at start (exit 2) before any probe', async () => {
    const untouched = path.join(suite.dir, 'untouched');
    fs.mkdirSync(untouched);
    const plain = path.join(suite.dir, 'plain.sh');
    fs.writeFileSync(plain, '#!/bin/sh\nexit 0\n', {mode: 0o644});
    const refused = await ebsmonOnce(['report', `--monitor=${untouched}`, '--ports=3306', `--fifo=${suite.dir}/none.fifo`, `--check=${plain} --flag`]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, new RegExp(`^Usage Error: --check=${plain} --flag: ${plain} is not executable\\n`));
    const missing = await ebsmonOnce(['report', `--monitor=${untouched}`, '--ports=3306', `--fifo=${suite.dir}/none.fifo`, '--check=ebsmon-no-such-check ping']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--check=ebsmon-no-such-check ping: ebsmon-no-such-check is not an executable in PATH/);
    assert.deepEqual(fs.readdirSync(untouched), [], 'nothing probed');
  });
});
