import fs from 'node:fs';
import path from 'node:path';

import {sh} from './rig';

export const STANDALONE = path.join(path.resolve(__dirname, '..', '..'), 'dist', 'ebsmon-linux-x64');

/**
 * A host without Node, without a chroot: the command runs in a private mount
 * namespace where every `node` on PATH (and the one running the tests) is a
 * tripwire bind-mounted over it. A call to node fails with 127 and is recorded;
 * every other tool in /usr/bin stays where it is. Nothing outside the
 * namespace changes.
 */
export class NoNode {
  readonly tripwire: string;
  readonly calls: string;
  private readonly nodes: Array<string>;

  constructor(dir: string) {
    this.tripwire = path.join(dir, 'node-tripwire');
    this.calls = path.join(dir, 'node-calls');
    fs.writeFileSync(this.tripwire, `#!/bin/sh\necho "$0 $*" >> '${this.calls}'\nexit 127\n`, {mode: 0o755});
    const onPath = sh(['bash', '-c', 'which -a node || true']).split('\n').filter(Boolean);
    this.nodes = [...new Set([...onPath, process.execPath].map(p => fs.realpathSync(p)))];
  }

  /** argv that runs `argv` with node masked. */
  wrap(argv: ReadonlyArray<string>): Array<string> {
    const mounts = this.nodes.map(n => `mount --bind '${this.tripwire}' '${n}'`).join(' && ');
    return ['unshare', '--mount', '--propagation', 'private', 'bash', '-c', `${mounts} && exec "$@"`, 'nonode', ...argv];
  }

  /** What called node, one line a call ('' when nothing did). */
  called(): string {
    return fs.existsSync(this.calls) ? fs.readFileSync(this.calls, 'utf8') : '';
  }
}
