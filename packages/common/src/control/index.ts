export * from './protocol.js';
export * from './status.js';
export * from './client.js';
export * from './server.js';
