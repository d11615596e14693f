export * from './probe';
export * from './mounts';
export * from './pin';
