export * from './rules';
export * from './nft';
export * from './firewall';
export * from './iptables';
export * from './nftables';
export * from './sockets';
export * from './cutter';
