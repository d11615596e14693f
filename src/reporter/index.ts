export * from './reporter';
