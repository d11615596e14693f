export * from './reporter';
export * from './findings';
export * from './lifecycle';
export * from './messages';
export * from './startup';
export * from './ticker';
