// The ONNX runner moved to onnx/runner.ts; this path stays for the files that still import it.
export { OnnxRunner, perCpuInstances, throughputThreads } from './onnx/runner.js';
export type { OnnxRunnerOptions } from './onnx/runner.js';
