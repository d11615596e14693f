export * from './registry';
export * from './monitor';
export * from './unblock';
