// The native TF.js packages are optional peers, absent where their libtensorflow download is not
// wanted; backend.ts imports them dynamically and types what it uses itself.
declare module '@tensorflow/tfjs-node';
declare module '@tensorflow/tfjs-node-gpu';
