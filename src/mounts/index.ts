export * from './mountinfo';
export * from './table';
