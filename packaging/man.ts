// make deb: the man page ebsmon(1), written from the commands' own usage data
// (clipanion's definitions: descriptions, details, options, examples), so it
// says what `ebsmon <verb> --help` says. Usage: man.ts OUT.
import fs from 'node:fs';

import {buildCli} from '../commands/cli';

type Definition = ReturnType<ReturnType<typeof buildCli>['definitions']>[number];

/** Roff text: backslashes escaped, `code` and --flags in bold with real minus signs, no line starting with a control character. */
export function roff(text: string): string {
  const minus = (s: string) => s.replace(/-/g, '\\-');
  return text
    .replace(/\\/g, '\\e')
    .split(/(`[^`]*`)/)
    .map(part => (part.startsWith('`') && part.endsWith('`') && part.length > 1
      ? `\\fB${minus(part.slice(1, -1))}\\fR`
      : part.replace(/(^|[\s(])(--?[A-Za-z][\w-]*)/g, (_, before: string, flag: string) => `${before}\\fB${minus(flag)}\\fR`)))
    .join('')
    .replace(/^([.'])/gm, '\\&$1');
}

/** clipanion wraps its text at 80 columns: back to one line a paragraph. */
function paragraphs(text: string | undefined): Array<string> {
  return (text ?? '').split(/\n\s*\n/).map(p => p.replace(/\s*\n\s*/g, ' ').trim()).filter(Boolean);
}

/** `--pidfile #0` -> `--pidfile=VALUE`, in roff. */
function option(definition: string): string {
  const [names = '', arg] = definition.split(' ');
  const flags = names.split(',').map(name => `\\fB${name.replace(/-/g, '\\-')}\\fR`).join(', ');
  return arg === undefined ? flags : `${flags}=\\fIVALUE\\fR`;
}

function synopsis(definition: Definition): string {
  const parts = definition.options.map(o => (o.required ? option(o.definition) : `[${option(o.definition)}]`));
  return [`.B ${definition.path}`, ...parts].join('\n');
}

function command(definition: Definition): Array<string> {
  const lines = [`.SS "${definition.path}"`, ...paragraphs(definition.description).map(roff)];
  for (const paragraph of paragraphs(definition.details))
    lines.push('.PP', roff(paragraph));
  if (definition.options.length > 0) {
    lines.push('.PP', 'Options:');
    for (const o of definition.options)
      lines.push('.TP', option(o.definition), roff(o.description ?? '') + (o.required ? ' (required)' : ''));
  }
  for (const [what, example] of definition.examples ?? [])
    lines.push('.PP', `${roff(what.trim())}:`, '.RS', '.nf', roff(example.replace(/^\$0/, 'ebsmon')), '.fi', '.RE');
  return lines;
}

export function manPage(version: string, date: string): string {
  const definitions = buildCli().definitions().filter(d => d.path !== 'ebsmon' && !/-h|--version/.test(d.path));
  return [
    `.TH EBSMON 1 "${date}" "ebsmon ${version}" "User Commands"`,
    // No hyphenation, ragged right: flags stay whole.
    '.nh',
    '.ad l',
    '.SH NAME',
    'ebsmon \\- fence a service\'s TCP ports while the block device under it hangs',
    '.SH SYNOPSIS',
    ...definitions.flatMap((d, i) => (i === 0 ? [synopsis(d)] : ['.br', synopsis(d)])),
    '.br',
    '.B ebsmon',
    '\\fB\\-\\-version\\fR | \\fB\\-\\-help\\fR | \\fIcommand\\fR \\fB\\-\\-help\\fR',
    '.SH DESCRIPTION',
    roff('A network block device (an EBS volume, an iSCSI LUN, an NFS mount) can stop answering while the service on top keeps its listening socket open. ebsmon makes such a node fail fast: one `ebsmon report` per service proves every second that the service\'s data directory still completes real I/O, and when those proofs stop, the one `ebsmon monitor` per host rejects remote connections to the service\'s ports with a TCP reset. When the disk answers again, the fence is lifted. `ebsmon status` shows the monitor\'s view; `ebsmon unblock` lifts a fence by hand.'),
    '.PP',
    roff('Durations are seconds (decimals allowed), lists are comma-separated, and every flag also works as `--flag value`.'),
    '.SH COMMANDS',
    ...definitions.flatMap(command),
    '.SH EXIT STATUS',
    roff('0 on success, 1 on a runtime failure, 2 on bad usage (the message names the flag and the value). `ebsmon status --nagios` exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.'),
    '.SH ENVIRONMENT',
    '.TP',
    '.B NODE_OPTIONS',
    roff('V8 flags for the standalone executable, which takes none on its command line. The systemd units set `--max-semi-space-size=2`, a small young generation for a busy monitor.'),
    '.SH FILES',
    '.TP',
    '.I /run/ebsmon/state.json',
    'The monitor\'s snapshot (its pulse, every reporter), rewritten at least once a second.',
    '.TP',
    '.I /run/ebsmon/metrics.prom',
    roff('The same as Prometheus metrics, for node_exporter\'s textfile collector (see `--metrics-file`).'),
    '.TP',
    '.I /etc/ebsmon/monitor.env',
    roff('More flags for ebsmon-monitor.service (`ARGS=`).'),
    '.TP',
    '.I /etc/ebsmon/report-NAME.env',
    roff('The reporter instance ebsmon-report@NAME.service: `MONITOR=`, `PORTS=`, and optionally `INTERVAL=`, `PROBE_TIMEOUT=`, `ARGS=`.'),
    '.TP',
    '.I /usr/share/doc/ebsmon/README.md',
    'How to install, run and alert on ebsmon; design.md beside it is the design.',
    '.SH SEE ALSO',
    '.BR nft (8),',
    '.BR iptables (8),',
    '.BR systemd.service (5)',
    '',
  ].join('\n');
}

if (require.main === module) {
  const out = process.argv[2];
  if (out === undefined)
    throw new Error('usage: man.ts OUT');
  const version = (JSON.parse(fs.readFileSync('package.json', 'utf8')) as {version: string}).version;
  // The commit's date, not today's: the same tree gives the same page (SOURCE_DATE_EPOCH wins).
  const epoch = Number(process.env.SOURCE_DATE_EPOCH ?? NaN);
  const date = new Date(Number.isFinite(epoch) ? epoch * 1000 : Date.now()).toISOString().slice(0, 10);
  fs.writeFileSync(out, manPage(version, date));
}
