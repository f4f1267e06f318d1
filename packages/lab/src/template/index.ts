// The booted-template lab (issue 12): cached Debian 13 root, template image with our .deb,
// containers per qube, and the lab that runs a topology on them.
export * from './root.js';
export * from './image.js';
export * from './deb.js';
export * from './container.js';
export * from './lab.js';
export * from './nm-layer.js';
