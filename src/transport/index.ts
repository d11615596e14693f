export * from './fifo';
