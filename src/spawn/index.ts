export * from './direct';
export * from './helper';
