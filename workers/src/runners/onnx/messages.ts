/**
 * What crosses between the main thread (`worker-session.ts`) and the model thread
 * (`thread.ts`): both sides import this file, neither imports the other.
 */
import type * as ort from 'onnxruntime-node';

/** The tensor types an input may have on its way to the thread (inferq's dtypes). */
export const WIRE_DTYPES = ['float32', 'float64', 'int32', 'int64', 'uint8', 'int8', 'bool'] as const;
export type WireDType = (typeof WIRE_DTYPES)[number];

/** The thread's `workerData`: the session to create. */
export interface ThreadData {
  readonly model: Uint8Array;
  readonly options: ort.InferenceSession.SessionOptions;
}

/** An input as it crosses: a shared buffer's id (with the buffer itself the first time) and its used bytes. */
export interface WireInput {
  readonly name: string;
  readonly type: WireDType;
  readonly dims: readonly number[];
  readonly buf: number;
  readonly sab?: SharedArrayBuffer;
  readonly byteLength: number;
}

/** An output as it comes back, its data's buffer transferred. */
export interface WireTensor {
  readonly name: string;
  readonly type: ort.Tensor.Type;
  readonly dims: readonly number[];
  readonly data: ort.Tensor.DataType;
}

/** The session's names and metadata, copied into plain objects to be posted. */
export interface SessionMeta {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly ort.InferenceSession.ValueMetadata[];
  readonly outputMetadata: readonly ort.InferenceSession.ValueMetadata[];
}

export type ToThread =
  | { readonly type: 'run'; readonly id: number; readonly inputs: readonly WireInput[] }
  /** The main thread's pool dropped shared buffer `buf`: the thread drops it too. */
  | { readonly type: 'forget'; readonly buf: number }
  | { readonly type: 'release' };

export type FromThread =
  | ({ readonly type: 'ready' } & SessionMeta)
  /** The session could not be created. */
  | { readonly type: 'error'; readonly message: string }
  /** `inputs`: the shared buffers of the run, back to the main thread's pool. */
  | { readonly type: 'result'; readonly id: number; readonly outputs: readonly WireTensor[]; readonly inputs: readonly number[] }
  | { readonly type: 'failed'; readonly id: number; readonly message: string; readonly inputs: readonly number[] }
  | { readonly type: 'released' };
