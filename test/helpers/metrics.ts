import {spawnSync} from 'node:child_process';

/** `promtool check metrics` on a metrics text: Prometheus's own parser and linter. null when clean; undefined without promtool. */
export function promtoolProblems(text: string): string | null | undefined {
  const result = spawnSync('promtool', ['check', 'metrics'], {input: text, encoding: 'utf8'});
  if (result.error !== undefined)
    return undefined;
  return result.status === 0 ? null : `exit ${result.status}: ${result.stdout}${result.stderr}`;
}

/** One sample's value, by its exact series name and labels. */
export function sampleOf(text: string, series: string): number | undefined {
  const line = text.split('\n').find(l => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}
