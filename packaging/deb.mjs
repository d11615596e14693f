// make deb: dist/ebsmon_VERSION_amd64.deb, built with dpkg-deb from a staged
// tree: the standalone executable (make release) as /usr/bin/ebsmon, the units
// of contrib/systemd as they are (they already run /usr/bin/ebsmon), the
// logrotate file, a default /etc/ebsmon/monitor.env (conffiles), the README
// and the design doc, examples, and a man page from the commands' usage text.
import {spawnSync} from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

const root = path.resolve(import.meta.dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const name = 'ebsmon';
const arch = 'amd64';
const output = path.join(root, 'dist', `${name}_${pkg.version}_${arch}.deb`);
const stage = path.join(root, 'dist', 'deb', `${name}_${pkg.version}_${arch}`);
const standalone = path.join(root, 'dist', 'ebsmon-linux-x64');
const maintainer = process.env.DEB_MAINTAINER ?? 'ebsmon maintainers <ebsmon@users.noreply.github.com>';

function run(argv, options = {}) {
  const result = spawnSync(argv[0], argv.slice(1), {encoding: 'utf8', cwd: root, ...options});
  if (result.status !== 0)
    throw new Error(`${argv.join(' ')} failed (${result.status ?? result.signal}): ${result.stderr ?? ''}${result.error?.message ?? ''}`);
  return result.stdout;
}

// The last commit's time stands for "now" wherever a date lands in the package: the same tree gives the same .deb.
const epoch = Number(process.env.SOURCE_DATE_EPOCH ?? run(['git', 'log', '-1', '--format=%ct']).trim());
const env = {...process.env, SOURCE_DATE_EPOCH: String(epoch)};

if (!fs.existsSync(standalone))
  throw new Error(`${standalone} is missing: make release builds it`);
fs.rmSync(stage, {recursive: true, force: true});

function put(relative, content, mode = 0o644) {
  const file = path.join(stage, relative);
  fs.mkdirSync(path.dirname(file), {recursive: true, mode: 0o755});
  fs.writeFileSync(file, content);
  fs.chmodSync(file, mode);
}
const from = file => fs.readFileSync(path.join(root, file));
const gzip = content => zlib.gzipSync(content, {level: 9});

put('usr/bin/ebsmon', fs.readFileSync(standalone), 0o755);
for (const unit of ['ebsmon-monitor.service', 'ebsmon-report@.service'])
  put(`lib/systemd/system/${unit}`, from(`contrib/systemd/${unit}`));
put('etc/ebsmon/monitor.env', from('contrib/config/monitor.env'));
put('etc/logrotate.d/ebsmon', from('contrib/logrotate/ebsmon'));

const doc = 'usr/share/doc/ebsmon';
put(`${doc}/README.md`, from('README.md'));
put(`${doc}/design.md`, from('docs/design.md'));
put(`${doc}/copyright`, from('packaging/debian/copyright'));
put(`${doc}/examples/report-mysql.env`, from('contrib/config/report-mysql.env'));
put(`${doc}/examples/ebsmon-report@mysql.service.d/mounts.conf`, from('contrib/systemd/ebsmon-report@mysql.service.d/mounts.conf'));
put(`${doc}/examples/prometheus/ebsmon-rules.yml`, from('contrib/prometheus/ebsmon-rules.yml'));
const date = new Date(epoch * 1000).toUTCString().replace('GMT', '+0000');
put(`${doc}/changelog.gz`, gzip(`${name} (${pkg.version}) unstable; urgency=medium\n\n  * Release ${pkg.version}: see README.md.\n\n -- ${maintainer}  ${date}\n`));

// Gzip headers carry no name or time when written by zlib: reproducible.
const manPage = path.join(root, 'dist', 'ebsmon.1');
run([process.execPath, '--import', 'tsx', 'packaging/man.ts', manPage], {env});
put('usr/share/man/man1/ebsmon.1.gz', gzip(fs.readFileSync(manPage)));

for (const script of ['postinst', 'prerm', 'postrm'])
  put(`DEBIAN/${script}`, from(`packaging/debian/${script}`), 0o755);
put('DEBIAN/conffiles', '/etc/ebsmon/monitor.env\n/etc/logrotate.d/ebsmon\n');

// The shared libraries node links (libc6, libstdc++6, libgcc-s1), with the versions their symbols need.
const scratch = fs.mkdtempSync(path.join(root, 'dist', 'deb', 'shlibs-'));
fs.mkdirSync(path.join(scratch, 'debian'));
fs.writeFileSync(path.join(scratch, 'debian', 'control'), `Source: ${name}\n\nPackage: ${name}\nArchitecture: ${arch}\n`);
const shlibs = /shlibs:Depends=(.*)/.exec(run(['dpkg-shlibdeps', '-O', path.join(stage, 'usr/bin/ebsmon')], {cwd: scratch}))?.[1];
fs.rmSync(scratch, {recursive: true, force: true});
if (shlibs === undefined)
  throw new Error('dpkg-shlibdeps printed no shlibs:Depends');

const md5sums = [];
const sizes = [];
const walk = dir => {
  for (const entry of fs.readdirSync(dir, {withFileTypes: true}).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const full = path.join(dir, entry.name);
    const relative = path.relative(stage, full);
    if (relative === 'DEBIAN')
      continue;
    if (entry.isDirectory()) {
      sizes.push(1);
      walk(full);
    } else {
      const content = fs.readFileSync(full);
      sizes.push(Math.ceil(content.length / 1024));
      if (!relative.startsWith('etc/'))
        md5sums.push(`${crypto.createHash('md5').update(content).digest('hex')}  ${relative}\n`);
    }
  }
};
walk(stage);
put('DEBIAN/md5sums', md5sums.join(''));

const description = pkg.description.replace(/:.*/, '');
put('DEBIAN/control', `${[
  `Package: ${name}`,
  `Version: ${pkg.version}`,
  `Architecture: ${arch}`,
  `Maintainer: ${maintainer}`,
  `Installed-Size: ${sizes.reduce((a, b) => a + b, 0)}`,
  // The firewall (nft, else iptables), ss -K for idle connections; perl-base, bash,
  // coreutils and util-linux (setsid) are Essential. netbase: without /etc/protocols
  // nft lists the fence rule with "l4proto 6", which the monitor then reads as changed
  // behind its back and rewrites without end (found in a debootstrap root).
  `Depends: ${shlibs}, nftables | iptables, iproute2, netbase`,
  'Recommends: logrotate',
  'Suggests: prometheus-node-exporter',
  'Section: admin',
  'Priority: optional',
  `Description: ${description}`,
  ' One reporter per service proves every second that its data directory still',
  ' completes real I/O on the block device (an EBS volume, an iSCSI LUN, an NFS',
  ' mount); when the proofs stop, the one monitor per host rejects remote',
  ' connections to the service\'s TCP ports with a reset, so clients and load',
  ' balancers move on at once, and lifts the fence when the disk answers again.',
  ' With nftables the kernel itself holds every deadline.',
  ' .',
  ' This package is the standalone executable: it needs no Node.js.',
].join('\n')}\n`);

// Owned by root in the archive whoever builds it; xz as Debian's own packages.
fs.rmSync(output, {force: true});
run(['dpkg-deb', '--root-owner-group', '-Zxz', '--build', stage, output], {env});
process.stdout.write(`${path.relative(root, output)}: ${(fs.statSync(output).size / 2 ** 20).toFixed(1)} MB\n`);
