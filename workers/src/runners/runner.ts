import type { DType, TensorMap, TensorSpec, TypedArray } from '@inferq/shared';

/**
 * A loaded model, on one device. Lifecycle: `load()` → `warmup()` → `run()`… → `dispose()`.
 * Every tensor crossing this interface has the batch dimension first.
 */
export interface Runner {
  /** Inputs and outputs, after load (from config.yaml, checked against the model). */
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  /** The device this runner actually runs on (after any fallback), e.g. `cpu`, `cuda:1`. */
  readonly device: Device;
  load(): Promise<void>;
  /** Runs a few batches of zeros so the first real job does not pay for lazy initialisation. */
  warmup(batchSizes?: readonly number[]): Promise<void>;
  run(inputs: TensorMap): Promise<TensorMap>;
  /**
   * Memory for a batch input that `run()` may take over without copying (not zeroed);
   * a tensor over it belongs to the runner once passed to `run()`. Optional.
   */
  allocate?(dtype: DType, length: number): TypedArray;
  /** Model instances running batches side by side (absent: one). */
  readonly instanceCount?: number;
  dispose(): Promise<void>;
}

export type Device = { readonly kind: 'cpu' } | { readonly kind: 'cuda'; readonly id: number };

export function formatDevice(d: Device): string {
  return d.kind === 'cpu' ? 'cpu' : `cuda:${d.id}`;
}
