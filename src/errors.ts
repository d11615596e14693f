/**
 * Operational failures: printed without a stack, exit 1. The `clipanion`
 * marker is structural (clipanion checks `error.clipanion.type === 'none'`),
 * so src/ stays free of clipanion imports.
 */
export class EbsmonError extends Error {
  readonly clipanion = {type: 'none'} as const;
  override name = 'EbsmonError';
}

export class StartupError extends EbsmonError {
  override name = 'StartupError' as const;
}

export class SnapshotError extends EbsmonError {
  override name = 'SnapshotError' as const;
}

export class UnblockError extends EbsmonError {
  override name = 'UnblockError' as const;
}

export class PidfileError extends EbsmonError {
  override name = 'PidfileError' as const;
}

export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
} as const;

export function errnoCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}
