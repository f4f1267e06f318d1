// Public surface of @qubes-net/qubesdb.
export * from './api.js';
export { MemoryQubesDB } from './memory.js';
// The FFI client (ffi-client.ts), wire codec (codec.ts) and daemon (daemon/) are added by
// their own modules; see README.
