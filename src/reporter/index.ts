export * from './reporter';
export * from './verdict';
