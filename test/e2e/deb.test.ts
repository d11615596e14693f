import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {nftSets} from '../helpers/firewall';
import {Proc} from '../helpers/proc';
import {ROOT, Teardown, isRoot, requireRoot, sh, waitFor} from '../helpers/rig';

const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {version: string}).version;
const DEB = path.join(ROOT, 'dist', `ebsmon_${VERSION}_amd64.deb`);
const MIRROR = process.env.EBSMON_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
const CLEAN_ENV = {PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8'};
/** A bound, not a measure: a slow mirror may take minutes; a stalled one must not hang the run. */
const DEBOOTSTRAP_TIMEOUT_MS = 20 * 60_000;

/** Changes with every boot or dpkg run whatever is installed: not what a package leaves behind. */
const CHURN = /^(proc|sys|dev|run|tmp|var\/tmp|var\/log|var\/cache|var\/lib\/dpkg|var\/lib\/systemd|root\/ebsmon\.deb)(\/|$)/;

/** Every path in the root, with its type and, for files in /etc, its content's hash. */
function inventory(root: string): Array<string> {
  const out: Array<string> = [];
  const walk = (relative: string) => {
    for (const entry of fs.readdirSync(path.join(root, relative), {withFileTypes: true})) {
      const rel = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (CHURN.test(rel))
        continue;
      const full = path.join(root, rel);
      if (entry.isDirectory()) {
        out.push(`${rel}/`);
        walk(rel);
      } else if (entry.isFile() && rel.startsWith('etc/')) {
        out.push(`${rel} ${crypto.createHash('sha256').update(fs.readFileSync(full)).digest('hex').slice(0, 16)}`);
      } else {
        out.push(entry.isSymbolicLink() ? `${rel} -> ${fs.readlinkSync(full)}` : rel);
      }
    }
  };
  walk('');
  return out.sort();
}

/** Runs a long step with a bound: past it, the step's whole process group is killed and the test fails. */
async function run(argv: Array<string>, what: string, timeoutMs: number): Promise<string> {
  const proc = new Proc(spawn(argv[0]!, argv.slice(1), {stdio: ['ignore', 'pipe', 'pipe'], env: CLEAN_ENV, detached: true}));
  let timer: NodeJS.Timeout | undefined;
  const late = await Promise.race([proc.exited.then(() => false), new Promise<boolean>(resolve => {
    timer = setTimeout(() => resolve(true), timeoutMs);
  })]);
  clearTimeout(timer);
  if (late) {
    process.kill(-proc.pid, 'SIGKILL');
    await proc.exited;
    assert.fail(`${what} did not finish within ${timeoutMs / 1000} s: ${proc.stderr.slice(-2000)}`);
  }
  assert.equal(proc.exitCode, 0, `${what}: ${proc.stderr.slice(-2000)}`);
  return proc.stdout;
}

describe('the Debian package (make deb) on a fresh Debian 12 root without Node', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let dir: string;
  let cleanupDir: () => Promise<void>;
  let teardown: Teardown;
  let root: string;
  let container: Proc | null = null;
  let leader = 0;

  before(async () => {
    assert.ok(fs.existsSync(DEB), `${DEB} is built by make deb (make test builds it)`);
    ({path: dir, cleanup: cleanupDir} = await tmpDir({unsafeCleanup: true}));
    teardown = new Teardown(dir);
    root = path.join(dir, 'root');
    // debootstrap mounts these inside the root while it installs and unmounts them when it ends;
    // if it dies on the way they would stay, and the directory could not be removed.
    for (const mount of ['proc', 'sys', 'dev/pts', 'dev'])
      teardown.add(['umount', '-l', path.join(root, mount)]);
  });

  after(async () => {
    await container?.stop(30_000);
    teardown?.dispose();
    await cleanupDir?.();
  });

  /** A command inside the booted container, with a clean environment; '' and the status when allowFail. */
  const inside = (argv: Array<string>, {allowFail = false} = {}) => sh(['nsenter', '--target', String(leader), '--all', 'env', '-i', ...Object.entries(CLEAN_ENV).map(([k, v]) => `${k}=${v}`), ...argv], {allowFail});

  it('holds the standalone executable, the units of contrib/systemd unchanged, config as conffiles and a man page', (t: TestContext) => {
    requireRoot(t);
    const contents = sh(['dpkg-deb', '--contents', DEB]);
    for (const file of ['./usr/bin/ebsmon', './lib/systemd/system/ebsmon-monitor.service', './lib/systemd/system/ebsmon-report@.service', './etc/ebsmon/monitor.env',
      './etc/logrotate.d/ebsmon', './usr/share/man/man1/ebsmon.1.gz', './usr/share/doc/ebsmon/README.md', './usr/share/doc/ebsmon/design.md', './usr/share/doc/ebsmon/copyright', './usr/share/doc/ebsmon/changelog.gz',
      './usr/share/doc/ebsmon/examples/prometheus/ebsmon-rules.yml', './usr/share/doc/ebsmon/examples/report-mysql.env'])
      assert.match(contents, new RegExp(` ${file.replace(/[.@]/g, '\\$&')}\\n`), file);
    assert.match(contents, /^-rwxr-xr-x root\/root .* \.\/usr\/bin\/ebsmon$/m);
    assert.equal(sh(['dpkg-deb', '--info', DEB, 'conffiles']), '/etc/ebsmon/monitor.env\n/etc/logrotate.d/ebsmon\n');
    assert.match(sh(['dpkg-deb', '--field', DEB, 'Depends']), /libc6 .*nftables \| iptables, iproute2, netbase/);
    const unpacked = path.join(dir, 'unpacked');
    sh(['dpkg-deb', '--extract', DEB, unpacked]);
    for (const unit of ['ebsmon-monitor.service', 'ebsmon-report@.service'])
      assert.equal(fs.readFileSync(path.join(unpacked, 'lib/systemd/system', unit), 'utf8'), fs.readFileSync(path.join(ROOT, 'contrib/systemd', unit), 'utf8'), `${unit} is contrib/systemd's`);
    assert.equal(sh([path.join(unpacked, 'usr/bin/ebsmon'), '--version']), `${VERSION}\n`);
    const man = sh(['bash', '-c', `zcat '${path.join(unpacked, 'usr/share/man/man1/ebsmon.1.gz')}'`]);
    for (const verb of ['monitor', 'report', 'status', 'unblock'])
      assert.match(man, new RegExp(`^\\.SS "ebsmon ${verb}"$`, 'm'), `the man page has ${verb}`);
  });

  it('installs on a fresh debootstrap root, runs a monitor and a reporter by the README\'s systemd steps, restarts both on an upgrade, and purges to nothing', async (t: TestContext) => {
    requireRoot(t);
    // Debian 12 as an operator's server has it (systemd as init, nftables, iproute2, netbase), and no Node.
    // Downloads and unpacks about 150 packages from the mirror.
    await run(['debootstrap', '--variant=minbase', '--include=systemd,nftables,iproute2,netbase', 'bookworm', root, MIRROR], 'debootstrap', DEBOOTSTRAP_TIMEOUT_MS);
    assert.equal(fs.existsSync(path.join(root, 'usr/bin/node')), false);

    // Booted with systemd as its init, in a network namespace of its own: the firewall it
    // writes is the container's, and nothing is registered with a systemd on this host.
    container = new Proc(spawn('systemd-nspawn', ['--quiet', '--register=no', '--keep-unit', '--private-network', '--console=pipe', `--directory=${root}`, '--boot'], {stdio: ['ignore', 'pipe', 'pipe'], env: CLEAN_ENV}));
    const nspawn = container;
    // nspawn's first child is an intermediate process that forks the container's init and exits:
    // the leader is the child that is pid 1 in its own pid namespace.
    leader = await waitFor('the container\'s init', () => {
      const children = fs.readFileSync(`/proc/${nspawn.pid}/task/${nspawn.pid}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number);
      return children.find(pid => {
        try {
          return /^NSpid:.*\t1$/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
        } catch {
          return false;
        }
      }) ?? null;
    });
    await waitFor('the boot', () => /^(running|degraded)$/m.test(inside(['systemctl', 'is-system-running'], {allowFail: true})), 90_000, 100).catch((error: Error) => {
      throw new Error(`${error.message}; jobs: ${inside(['systemctl', 'list-jobs', '--no-pager'], {allowFail: true})}; console: ${nspawn.stdout.slice(-3000)}${nspawn.stderr.slice(-1000)}`);
    });
    const before0 = inventory(root);

    fs.copyFileSync(DEB, path.join(root, 'root/ebsmon.deb'));
    inside(['dpkg', '-i', '/root/ebsmon.deb']);
    assert.equal(inside(['ebsmon', '--version']), `${VERSION}\n`);
    assert.equal(inside(['bash', '-c', 'command -v node || echo "no node"']), 'no node\n');
    // systemd-analyze verify reports problems on stderr (and by its exit code): both streams and the code.
    assert.equal(inside(['bash', '-c', 'systemd-analyze verify --man=no ebsmon-monitor.service ebsmon-report@mysql.service 2>&1; echo "exit $?"']), 'exit 0\n');

    // The README's steps.
    fs.mkdirSync(path.join(root, 'var/lib/mysql'));
    fs.writeFileSync(path.join(root, 'etc/ebsmon/report-mysql.env'), 'MONITOR=/var/lib/mysql\nPORTS=3306\n');
    inside(['systemctl', 'enable', '--now', 'ebsmon-monitor.service', 'ebsmon-report@mysql.service']);
    type Status = {monitor: {alive: boolean, firewall: string}, reporters: Array<{name: string, state: string}>};
    const status = await waitFor('a healthy reporter', () => {
      const text = inside(['ebsmon', 'status', '--json'], {allowFail: true});
      const view = text === '' ? null : JSON.parse(text) as Status;
      return view?.monitor.alive === true && view.reporters.some(r => r.name === 'mysql' && r.state === 'healthy') ? view : null;
    });
    assert.equal(status.monitor.firewall, 'nftables');
    assert.equal(inside(['systemctl', 'is-active', 'ebsmon-monitor.service', 'ebsmon-report@mysql.service']), 'active\nactive\n');
    assert.match(inside(['nft', 'list', 'set', 'inet', 'ebsmon', 'alive']), /elements = \{ 3306 timeout \d+s/);
    const journal = inside(['journalctl', '--no-pager', '-u', 'ebsmon-monitor.service']);
    assert.match(journal, /monitor running/);
    assert.doesNotMatch(journal, /changed behind its back/);

    // An upgrade (the same version again) restarts both; the reporter stays unfenced.
    const mainPid = (unit: string) => inside(['systemctl', 'show', '--property=MainPID', '--value', unit]).trim();
    const before1 = [mainPid('ebsmon-monitor.service'), mainPid('ebsmon-report@mysql.service')];
    inside(['dpkg', '-i', '/root/ebsmon.deb']);
    const after1 = [mainPid('ebsmon-monitor.service'), mainPid('ebsmon-report@mysql.service')];
    assert.ok(after1[0] !== before1[0] && after1[1] !== before1[1] && !after1.includes('0'), `restarted: ${before1.join(',')} -> ${after1.join(',')}`);
    await waitFor('healthy after the upgrade', () => {
      const text = inside(['ebsmon', 'status', '--json'], {allowFail: true});
      return text !== '' && (JSON.parse(text) as Status).reporters.some(r => r.name === 'mysql' && r.state === 'healthy' && (r as {fenceCount?: number}).fenceCount === 0);
    });

    inside(['dpkg', '--purge', 'ebsmon']);
    assert.equal(inside(['systemctl', 'is-active', 'ebsmon-monitor.service', 'ebsmon-report@mysql.service'], {allowFail: true}), 'inactive\ninactive\n');
    assert.equal(inside(['bash', '-c', 'ls -d /run/ebsmon /usr/bin/ebsmon /etc/ebsmon 2>&1 | grep -c "No such file"']), '3\n');
    // Removal fences nothing: the reporter stopped first and said goodbye, so no port is guarded.
    const table = nftSets(inside(['nft', '-j', 'list', 'table', 'inet', 'ebsmon']));
    assert.equal(table?.guarded.size, 0);
    fs.rmSync(path.join(root, 'root/ebsmon.deb'));
    // In the service's own data directory, which no package script walks into: the
    // reporter's probe file, kept for its next start (the README says to remove it by hand).
    assert.deepEqual(fs.readdirSync(path.join(root, 'var/lib/mysql')), ['.ebsmon-probe-mysql']);
    fs.rmSync(path.join(root, 'var/lib/mysql'), {recursive: true});
    assert.deepEqual(inventory(root), before0);
  });
});
