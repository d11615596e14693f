import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {v8FlagsFor} from '../../src/daemon/v8';

describe('v8FlagsFor (the V8 flags a command line sets at start)', () => {
  it('gives a reporter its own flags, written out', () => {
    const reporter = ['--semi-space-growth-factor=1', '--no-turbofan', '--no-sparkplug', '--no-maglev'];
    assert.deepEqual(v8FlagsFor(['report', '--monitor=/var/lib/mysql', '--ports=3306']), reporter);
    assert.deepEqual(v8FlagsFor(['--log-level=debug', 'report', '--monitor=/srv']), reporter);
  });

  it('leaves every other command, and no command, as node started it', () => {
    for (const args of [['monitor', '--fifo=/run/ebsmon/ebsmon.fifo'], ['status'], ['unblock', 'report'], ['--version'], []])
      assert.deepEqual(v8FlagsFor(args), [], args.join(' '));
  });
});
