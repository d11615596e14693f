'use strict';
// The entry point of dist/ebsmon-linux-x64 (a Node single executable application,
// built by packaging/sea.mjs). The bundle is an asset of the executable; this
// compiles it with a V8 code cache made at build time after a run of
// `ebsmon --version`, so it holds every function start-up compiles (the cache
// Node's own useCodeCache makes holds the top level only: measured 10% less
// start-up, this one 17%).
//
// V8 accepts a cache only under the V8 flags it was made with (otherwise
// vm.Script sets cachedDataRejected, silently, and compiles from source), so
// there is one cache per way the executable is run: with no flags (by hand),
// and with NODE_OPTIONS=--max-semi-space-size=2 (the systemd units).
const vm = require('node:vm');

const FILENAME = 'ebsmon.js';

/** The asset name of the cache for the V8 flags in NODE_OPTIONS (packaging/sea.mjs makes both). */
function cacheAsset(nodeOptions) {
  return (nodeOptions ?? '').split(/\s+/).includes('--max-semi-space-size=2') ? 'cache-semi2' : 'cache-default';
}

/** The bundle as Node's CommonJS loader would wrap it. */
function compile(source, cachedData) {
  return new vm.Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {filename: FILENAME, cachedData});
}

function run(script, requireBuiltin) {
  const module = {exports: {}};
  script.runInThisContext().call(module.exports, module.exports, requireBuiltin, module, FILENAME, '.');
}

const sea = require('node:sea');
if (sea.isSea()) {
  let cache;
  try {
    cache = Buffer.from(sea.getRawAsset(cacheAsset(process.env.NODE_OPTIONS)));
  } catch {
    // A build without caches: compile from source.
  }
  // require here loads built-in modules only, which is all the bundle asks for.
  run(compile(sea.getAsset(FILENAME, 'utf8'), cache), require);
} else {
  // At build time, under plain node with the flags of one cache (packaging/sea.mjs):
  // node [V8 flags] sea-main.cjs BUNDLE CACHE runs `ebsmon --version` and writes the cache.
  const fs = require('node:fs');
  const [bundle, out] = process.argv.slice(2);
  const script = compile(fs.readFileSync(bundle, 'utf8'));
  process.argv = [process.execPath, process.execPath, '--version'];
  process.on('exit', () => fs.writeFileSync(out, script.createCachedData()));
  run(script, require);
}
