// Moved to onnx/session.ts; this path stays for the files that still import it.
export { inThreadSessionFactory } from './onnx/session.js';
export type { OrtSession, OrtSessionFactory } from './onnx/session.js';
