// make release: dist/ebsmon-linux-x64, one executable that needs no Node on the
// host (Node's single executable application: this node binary, stripped, with
// the bundle and its code caches injected by postject).
import {spawnSync} from 'node:child_process';
import fs from 'node:fs';
import {createRequire} from 'node:module';
import path from 'node:path';
import {inject} from 'postject';

// Each cache is made, and must be used, under exactly its V8 flags.
const {CACHES} = createRequire(import.meta.url)('./sea-main.cjs');

const root = path.resolve(import.meta.dirname, '..');
const work = path.join(root, 'dist', 'sea');
const output = path.join(root, 'dist', 'ebsmon-linux-x64');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
// Node's documented fuse: postject flips it so this node runs the blob instead of its own CLI.
const FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

function run(argv, options = {}) {
  const result = spawnSync(argv[0], argv.slice(1), {encoding: 'utf8', cwd: root, ...options});
  if (result.status !== 0)
    throw new Error(`${argv.join(' ')} failed (${result.status ?? result.signal}): ${result.stderr ?? ''}${result.error?.message ?? ''}`);
  return result.stdout;
}

fs.rmSync(work, {recursive: true, force: true});
run([process.execPath, 'esbuild.config.mjs', '--sea']);
const bundle = path.join(work, 'ebsmon.js');

// A clean environment: a NODE_OPTIONS of the caller's would change the flags a cache is made under.
const env = {PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C'};
const assets = {'ebsmon.js': bundle};
for (const [name, text] of Object.entries(CACHES)) {
  const file = path.join(work, `${name}.bin`);
  const flags = text.split(' ').filter(Boolean);
  // --jitless makes V8 say it turns WebAssembly off; that is all it prints.
  const printed = run([process.execPath, ...flags, path.join(root, 'packaging', 'sea-main.cjs'), bundle, file], {env});
  if (printed.trim() !== pkg.version)
    throw new Error(`the bundle under ${text || 'no flags'} printed ${JSON.stringify(printed)}, not its version`);
  assets[name] = file;
}

const config = path.join(work, 'sea-config.json');
const blob = path.join(work, 'sea.blob');
fs.writeFileSync(config, `${JSON.stringify({
  main: path.join(root, 'packaging', 'sea-main.cjs'),
  output: blob,
  disableExperimentalSEAWarning: true,
  // The caches above replace Node's own (it would hold the loader's top level only).
  useCodeCache: false,
  useSnapshot: false,
  assets,
}, null, 2)}\n`);
run([process.execPath, '--experimental-sea-config', config], {env});

// Stripped before injection (postject adds a note the strip would not keep): 99 -> 86 MB.
// .comment holds only compiler version strings.
const binary = path.join(work, 'ebsmon');
fs.copyFileSync(process.execPath, binary);
fs.chmodSync(binary, 0o755);
run(['strip', '--strip-all', '--remove-section=.comment', binary]);
// postject's ELF writer warns about section names it cannot place; the result runs (checked below).
const warn = console.warn;
console.warn = () => {};
try {
  await inject(binary, 'NODE_SEA_BLOB', fs.readFileSync(blob), {sentinelFuse: FUSE});
} finally {
  console.warn = warn;
}

const version = run([binary, '--version'], {env: {PATH: '/nonexistent'}}).trim();
if (version !== pkg.version)
  throw new Error(`${binary} --version printed ${JSON.stringify(version)}, not ${pkg.version}`);
fs.renameSync(binary, output);
process.stdout.write(`${path.relative(root, output)}: ${(fs.statSync(output).size / 2 ** 20).toFixed(1)} MB, node ${process.version}, ebsmon ${version}\n`);
