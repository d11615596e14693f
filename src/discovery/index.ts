export * from './scan';
export * from './scanner';
export * from './script';
export * from './tracker';
