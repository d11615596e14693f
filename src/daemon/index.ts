export * from './pidfile';
export * from './daemonize';
export * from './signals';
export * from './role';
export * from './v8';
