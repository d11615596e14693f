'use strict';
// Preloaded into the standalone executable with NODE_OPTIONS=--require (the
// executable takes no node options on its command line): records whether the
// bundle's code cache was accepted and, at exit, how large V8 lets the young
// generation grow under allocation, then writes both as JSON to the file
// named by EBSMON_SEA_PROBE.
const fs = require('node:fs');
const v8 = require('node:v8');
const vm = require('node:vm');

const seen = {cache: null, newSpaceBytes: null};
const Script = vm.Script;
vm.Script = class extends Script {
  constructor(source, options) {
    super(source, options);
    if (options?.filename === 'ebsmon.js')
      seen.cache = {bytes: options.cachedData?.length ?? 0, rejected: this.cachedDataRejected ?? null};
  }
};

process.on('exit', () => {
  // Short-lived garbage, as a busy monitor makes: the young generation grows to its limit.
  let keep = [];
  for (let i = 0; i < 3e6; i++) {
    keep.push({i, s: `x${i}`});
    if (keep.length > 20_000)
      keep = [];
  }
  seen.newSpaceBytes = v8.getHeapSpaceStatistics().find(space => space.space_name === 'new_space').space_size;
  fs.writeFileSync(process.env.EBSMON_SEA_PROBE, `${JSON.stringify(seen)}\n`);
});
