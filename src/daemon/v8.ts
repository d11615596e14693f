import v8 from 'node:v8';

/**
 * V8 settings a reporter gives itself, however it was started (by hand, from
 * the bundle or the standalone executable, or by its unit), with no
 * NODE_OPTIONS and no second process. Only flags V8 reads while it runs, not
 * once when it makes the heap, take effect this way, and only from the moment
 * they are set: commands/v8-first.ts sets them before any other module of the
 * bundle is evaluated (bench step `light` measures them).
 *
 * - the young generation stays at the size it starts with: V8 reads the growth
 *   factor each time it would grow it (--max-semi-space-size, read only when
 *   the heap is made, would be too late here);
 * - no optimizing or baseline compiler: a reporter runs a few functions once an
 *   interval, and code never compiled is code, and compiler, never paged in.
 *   That is --jitless's effect without --jitless, which must be given before V8
 *   starts. Not --regexp-interpret-all: set after a regular expression was
 *   compiled to machine code, it crashed the process.
 */
export const REPORTER_V8_FLAGS: ReadonlyArray<string> = ['--semi-space-growth-factor=1', '--no-turbofan', '--no-sparkplug', '--no-maglev'];

let set: ReadonlyArray<string> = [];

/** The flags for a command line (`report ...`): the command is its first word that is not an option. */
export function v8FlagsFor(args: ReadonlyArray<string>): ReadonlyArray<string> {
  return args.find(arg => !arg.startsWith('-')) === 'report' ? REPORTER_V8_FLAGS : [];
}

/** Sets V8 flags in this running process (v8.setFlagsFromString). */
export function setV8Flags(flags: ReadonlyArray<string>): void {
  for (const flag of flags)
    v8.setFlagsFromString(flag);
  set = [...set, ...flags];
}

/** What setV8Flags set in this process, for the log. */
export function v8FlagsSet(): ReadonlyArray<string> {
  return set;
}
