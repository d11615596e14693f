import fs from 'node:fs';
import path from 'node:path';
import {encodeMessage} from '../src/heartbeat';
import {FifoWriter} from '../src/transport';
import {spawn} from 'node:child_process';
import {Proc, scrubbedEnv} from '../test/helpers/proc';
import {EBSMON} from '../test/helpers/rig';
import {Teardown, createNetRig, waitFor} from '../test/helpers/rig';
import {rssKb} from './stats';
const heartbeat = (name: string, port: number) => encodeMessage({v: 1, kind: 'heartbeat', name, pid: 1000, ports: [port], interval: 1, probeTimeout: 0.3, seq: 1, sentAt: Date.now(), probeMs: 1});
(async () => {
  const dir = fs.mkdtempSync('/tmp/steady-');
  const td = new Teardown(dir);
  const rig = createNetRig(td);
  const n = Number(process.argv[2]); const seconds = Number(process.argv[3]);
  const stateDir = path.join(dir, 's');
  const monitor = new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, ...(process.env.NODE_OPTS ?? '').split(' ').filter(Boolean), EBSMON, 'monitor', `--fifo=${stateDir}/ebsmon.fifo`, `--state-dir=${stateDir}`, '--timeout=10', '--log-level=warn'], {stdio: ['ignore', 'pipe', 'pipe'], env: scrubbedEnv({MEMOUT: '/tmp/rss/monout', MEMAT: '18000', ...(process.env.MEMOUT2 ? {MEMOUT: process.env.MEMOUT2} : {}), ...(process.env.ARENA ? {MALLOC_ARENA_MAX: process.env.ARENA} : {})})}));
  await waitFor('m', () => fs.existsSync(path.join(stateDir, 'state.json')));
  const w = new FifoWriter(`${stateDir}/ebsmon.fifo`);
  let max = 0;
  for (let s = 0; s < seconds; s++) {
    const tick = performance.now();
    for (let i = 0; i < n; i++) while (!w.send(heartbeat(`steady${i}`, 40000 + i)).ok) await new Promise(r => setImmediate(r));
    max = Math.max(max, rssKb(monitor.pid) / 1024);
    await new Promise(r => setTimeout(r, Math.max(0, 1000 - (performance.now() - tick))));
  }
  const sm = fs.readFileSync(`/proc/${monitor.pid}/smaps_rollup`, 'utf8');
  console.log(`opts=[${process.env.NODE_OPTS ?? ''}] n=${n} rss max ${max.toFixed(1)} MB; ${/Private_Dirty:\s+(\d+)/.exec(sm)![1]} kB private dirty`);
  fs.writeFileSync('/tmp/rss/gc.log', monitor.stdout); fs.writeFileSync('/tmp/rss/pmap', require('child_process').execSync('pmap -x ' + monitor.pid + '; cat /proc/' + monitor.pid + '/smaps_rollup; ls /proc/' + monitor.pid + '/task | wc -l').toString()); w.close(); await monitor.stop(); td.dispose(); fs.rmSync(dir, {recursive: true});
})();
