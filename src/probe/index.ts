export * from './probe';
export * from './mounts';
export * from './pin';
export * from './device';
export * from './check';
