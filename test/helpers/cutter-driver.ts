// Plays the monitor's part for the socket cutter, inside a namespace: a real
// spawn helper starts a real SocketCutter. Usage: cutter-driver.ts SPAWN_DIR.
// Commands on stdin, one JSON object a line:
//   {"arm": "in"|"out", "port": P, "atNs": "NS"}  (NS: CLOCK_MONOTONIC, process.hrtime)
//   {"armMany": "in"|"out", "port": FIRST, "count": N, "atNs": "NS", "spreadMs": S}  (port FIRST+i at NS + i*S/N ms)  {"cutNow": "in"|"out", "port": P, "count": N (default 1)}  {"clear": "in"|"out", "port": P}  {"quit": true}
// Events on stdout, one JSON object a line: {"ready": {supported, detail, pid, helperPid, warnings}}
// or {"failed": DETAIL}, then {"cut": {kind, port, sockets}, "at": NS (when the line was read)}, {"error": TEXT}, {"exit": CODE}, and
// {"sent": N} once the Nth command has been written to the cutter (the class writes once per turn).
// Killing this process with SIGKILL is a monitor that died.
import readline from 'node:readline';

import {SocketCutter} from '../../src/fencing';
import type {CutKind} from '../../src/fencing';
import {SpawnHelper} from '../../src/spawn';

type Command = {arm?: CutKind, armMany?: CutKind, cutNow?: CutKind, clear?: CutKind, port?: number, count?: number, atNs?: string, spreadMs?: number, quit?: boolean};

const say = (event: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(event)}\n`);

async function main(): Promise<void> {
  const helper = SpawnHelper.start(process.argv[2]!, message => say({helperError: message}));
  const started = await SocketCutter.start({helper});
  if (!started.ok) {
    say({failed: started.detail});
    helper.close();
    return;
  }
  const cutter = started.cutter;
  cutter.onCut(cut => say({cut, at: String(process.hrtime.bigint())}));
  cutter.onError(text => say({error: text}));
  cutter.onExit(code => say({exit: code}));
  // As the monitor does once it has handed the cutter its deadlines (here: none yet).
  cutter.takeOver();
  say({ready: {supported: cutter.supported, detail: cutter.unsupportedDetail, pid: cutter.pid, helperPid: helper.pid, warnings: cutter.warnings}});
  let received = 0;
  for await (const line of readline.createInterface({input: process.stdin})) {
    const command = JSON.parse(line) as Command;
    const sent = ++received;
    // After the class's own write of this turn.
    setImmediate(() => setImmediate(() => say({sent})));
    // The test's deadline is absolute on the shared clock; the class takes this process's performance.now().
    const untilMs = () => performance.now() + Number(BigInt(command.atNs!) - process.hrtime.bigint()) / 1e6;
    if (command.arm !== undefined) {
      cutter.arm(command.arm, command.port!, untilMs());
    } else if (command.armMany !== undefined) {
      const first = untilMs();
      const step = (command.spreadMs ?? 0) / command.count!;
      for (let i = 0; i < command.count!; i++)
        cutter.arm(command.armMany, command.port! + i, first + i * step);
    } else if (command.cutNow !== undefined) {
      for (let port = command.port!; port < command.port! + (command.count ?? 1); port++)
        cutter.cutNow(command.cutNow, port);
    } else if (command.clear !== undefined) {
      cutter.clear(command.clear, command.port!);
    } else if (command.quit === true) {
      cutter.quit();
    }
  }
  helper.close();
}

void main();
