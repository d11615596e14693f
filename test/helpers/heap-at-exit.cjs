'use strict';
// Preloaded with NODE_OPTIONS=--require (make bench): at exit, writes V8's own
// account of the heap (total, used, each space's committed size) as JSON to
// the file named by EBSMON_HEAP_OUT.
const fs = require('node:fs');
const v8 = require('node:v8');

process.on('exit', () => {
  const heap = v8.getHeapStatistics();
  const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map(space => [space.space_name, space.physical_space_size]));
  fs.writeFileSync(process.env.EBSMON_HEAP_OUT, `${JSON.stringify({totalPhysical: heap.total_physical_size, used: heap.used_heap_size, malloced: heap.malloced_memory, spaces})}\n`);
});
