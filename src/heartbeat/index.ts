export * from './schema';
export * from './codec';
