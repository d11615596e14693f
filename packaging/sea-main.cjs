'use strict';
// The entry point of dist/ebsmon-linux-x64 (a Node single executable application,
// built by packaging/sea.mjs). The bundle is an asset of the executable; this
// compiles it with a V8 code cache made at build time after a run of
// `ebsmon --version`, so it holds every function start-up compiles, not only the
// top level as the cache of Node's own "useCodeCache" does (measured on
// `ebsmon --version`, paired runs: Node's cache took 10-12% off the start-up,
// this one 18-22%). "useSnapshot" was tried and left: the snapshot kept the
// stdout clipanion had at build time (nothing was printed), Node warns that
// child_process is not verified in a snapshot, and RSS grew by 18 MB.
//
// V8 accepts a cache only under the V8 flags it was made with (otherwise
// vm.Script sets cachedDataRejected, silently, and compiles from source), so
// there is one cache per way the executable is run: by hand, with no flags, and
// with the NODE_OPTIONS of each systemd unit.
const vm = require('node:vm');

const FILENAME = 'ebsmon.js';

/** Asset name -> the V8 flags its cache is made and used under (sorted, space-separated). */
const CACHES = {
  'cache-default': '',
  'cache-monitor': '--max-semi-space-size=2',
  'cache-reporter': '--jitless --max-semi-space-size=1',
};

/** The cache for the V8 flags in NODE_OPTIONS (other node options, like --require, do not matter). */
function cacheAsset(nodeOptions) {
  const flags = (nodeOptions ?? '').split(/\s+/).filter(token => /^--(jitless|max-semi-space-size|max-old-space-size)\b/.test(token)).sort().join(' ');
  return Object.keys(CACHES).find(name => CACHES[name] === flags);
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
  const asset = cacheAsset(process.env.NODE_OPTIONS);
  let cache;
  try {
    cache = asset === undefined ? undefined : Buffer.from(sea.getRawAsset(asset));
  } catch {
    // A build without caches: compile from source.
  }
  // require here loads built-in modules only, which is all the bundle asks for.
  run(compile(sea.getAsset(FILENAME, 'utf8'), cache), require);
} else if (require.main === module) {
  // At build time, under plain node with the flags of one cache (packaging/sea.mjs):
  // node [V8 flags] sea-main.cjs BUNDLE CACHE runs `ebsmon --version` and writes the cache.
  const fs = require('node:fs');
  const [bundle, out] = process.argv.slice(2);
  const script = compile(fs.readFileSync(bundle, 'utf8'));
  process.argv = [process.execPath, process.execPath, '--version'];
  process.on('exit', () => fs.writeFileSync(out, script.createCachedData()));
  run(script, require);
} else {
  module.exports = {CACHES, cacheAsset};
}
