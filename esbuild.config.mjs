import {chmodSync, readFileSync} from 'node:fs';
import {build} from 'esbuild';

const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8'));
const node = /\d+/.exec(pkg.engines.node)[0];
const outfile = 'dist/ebsmon';

// CommonJS: clipanion and winston require() built-ins; an ESM bundle fails at start.
const result = await build({
  entryPoints: ['commands/bin.ts'],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: `node${node}`,
  keepNames: true,
  minify: false,
  sourcemap: false,
  legalComments: 'none',
  // A daemon that allocates briskly (1000 heartbeats/s) otherwise lets V8 grow
  // each young-generation semi-space to 16 MB: --max-semi-space-size=2 took the
  // monitor with 1000 reporters from 93 to 64 MB RSS (make bench). env -S:
  // coreutils >= 8.30.
  banner: {js: '#!/usr/bin/env -S node --max-semi-space-size=2'},
  define: {EBSMON_VERSION: JSON.stringify(pkg.version)},
  logLevel: 'warning',
  logOverride: {},
});
if (result.warnings.length > 0) {
  console.error(`esbuild: ${result.warnings.length} warning(s); warnings are fatal`);
  process.exit(1);
}
chmodSync(outfile, 0o755);
