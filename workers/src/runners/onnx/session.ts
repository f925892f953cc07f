import * as ort from 'onnxruntime-node';

/** The part of an ONNX Runtime session a runner uses, wherever the session lives (tests inject their own). */
export interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly ort.InferenceSession.ValueMetadata[];
  readonly outputMetadata: readonly ort.InferenceSession.ValueMetadata[];
  run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>>;
  /**
   * Memory for an input (not zeroed) that `run()` may take over without copying: a tensor
   * over it belongs to the session once passed to `run()`. Sessions without it copy inputs.
   */
  allocate?(bytes: number): ArrayBufferLike;
  release(): Promise<void>;
}

export type OrtSessionFactory = (model: Uint8Array, options: ort.InferenceSession.SessionOptions) => Promise<OrtSession>;

/** A session on the calling thread: `run()` blocks the event loop while it computes. */
export const inThreadSessionFactory: OrtSessionFactory = (model, options) => ort.InferenceSession.create(model, options);

