export * from './prober';
export * from './pin';
export * from './device';
export * from './check';
