import {chmodSync, readFileSync, writeFileSync} from 'node:fs';
import {build} from 'esbuild';

const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8'));
const node = /\d+/.exec(pkg.engines.node)[0];
// --sea: the bundle inside the standalone executable (packaging/sea.mjs), not run by itself.
const sea = process.argv.includes('--sea');
const outfile = sea ? 'dist/sea/ebsmon.js' : 'dist/ebsmon';

// CommonJS: clipanion and winston require() built-ins; an ESM bundle fails at start.
const result = await build({
  entryPoints: ['commands/bin.ts'],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: `node${node}`,
  keepNames: true,
  // The standalone keeps names (stack traces) but drops comments and blank space: the
  // source stays in the heap of every process, and the doc comments esbuild keeps carry
  // two non-ASCII characters, which make V8 hold all of it as UTF-16 (1.4 MB, not 0.7).
  minify: false,
  minifyWhitespace: sea,
  sourcemap: false,
  legalComments: 'none',
  // A daemon that allocates briskly (1000 heartbeats/s) otherwise lets V8 grow
  // each young-generation semi-space to 16 MB: --max-semi-space-size=2 took the
  // monitor with 1000 reporters from 93 to 64 MB RSS (make bench). env -S:
  // coreutils >= 8.30. The standalone has no shebang: the units pass the flag in
  // NODE_OPTIONS.
  banner: sea ? {} : {js: '#!/usr/bin/env -S node --max-semi-space-size=2'},
  define: {EBSMON_VERSION: JSON.stringify(pkg.version)},
  logLevel: 'warning',
  logOverride: {},
});
if (result.warnings.length > 0) {
  console.error(`esbuild: ${result.warnings.length} warning(s); warnings are fatal`);
  process.exit(1);
}
if (sea) {
  if (/[^\x00-\x7f]/.test(readFileSync(outfile, 'latin1'))) {
    console.error(`${outfile} is not ASCII: V8 would keep its source as UTF-16`);
    process.exit(1);
  }
} else {
  // V8 keeps a script's source as UTF-16 when one character of it is not ASCII: twice
  // the bytes in every process's heap. esbuild escapes non-ASCII characters in strings,
  // regular expressions and names (its default charset); any left are in comments
  // (a dash in a dependency's, a unit in ours), where a '?' changes nothing.
  const text = readFileSync(outfile, 'utf8');
  if (/[^\x00-\x7f]/.test(text))
    writeFileSync(outfile, text.replace(/[^\x00-\x7f]/g, '?'));
  chmodSync(outfile, 0o755);
}
