// Moved to onnx/worker-session.ts (the model thread's main side) and buffer-pool.ts; this path stays for the files that still import it.
export { BufferPool } from './buffer-pool.js';
export { workerSessionFactory } from './onnx/worker-session.js';
