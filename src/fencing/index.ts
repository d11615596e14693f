export * from './rules';
export * from './firewall';
