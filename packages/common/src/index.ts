export * from './log.js';
export * from './exec.js';
export * from './addr.js';
export * from './iproute.js';
export * from './nft.js';
export * from './sd-notify.js';
export * from './root.js';
export * from './version.js';
