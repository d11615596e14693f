export * from './snapshot';
export * from './metrics';
export * from './status';
export * from './fenced';
