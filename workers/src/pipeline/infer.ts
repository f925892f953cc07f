/** The transport-neutral step of every queue worker: check a decoded envelope against its model and run it through the model's batcher. */
import { DeadlineExceededError, allocate, jobSuffix, validateInputs } from '@inferq/shared';
import type { Envelope, NonFinitePolicy, Tensor, TensorMap, TensorSpec } from '@inferq/shared';
import type { LoadedModel } from '../models/loaded-model.js';
import type { ModelPool } from '../models/model-pool.js';
import type { JobTrack } from './track.js';

export interface Inference {
  readonly model: LoadedModel;
  readonly outputs: TensorMap;
  readonly rows: number;
}

/** Validates the envelope's tensors and deadline, then awaits the model's outputs for its rows; `track` learns the model and when its rows start. */
export async function inferEnvelope(models: Pick<ModelPool, 'get'>, envelope: Envelope, nonFinite: NonFinitePolicy, track?: JobTrack): Promise<Inference> {
  const id = envelope.id;
  const model = await models.get(envelope.model, envelope.version);
  if (track !== undefined) track.model = model;
  // An empty batch may come without tensors (the caller could not know their widths).
  const bare = envelope.rows === 0 && Object.keys(envelope.tensors).length === 0;
  const rows = bare ? 0 : validateInputs(envelope.tensors, model.inputs, { jobId: id, model: model.name, version: model.version, nonFinite });
  if (envelope.deadline !== undefined && envelope.deadline <= Date.now()) {
    throw new DeadlineExceededError(`job deadline passed ${Date.now() - envelope.deadline} ms before it started${jobSuffix(id)}`, { jobId: id, model: model.name });
  }
  if (rows === 0) return { model, outputs: emptyOutputs(model.outputs), rows };
  const outputs = await model.batcher.submit({ id, tensors: envelope.tensors, rows, deadline: envelope.deadline, onStart: track?.started });
  return { model, outputs, rows };
}

/** Zero-row tensors of every output: a zero-row job gets a reply of the model's full schema. */
function emptyOutputs(specs: readonly TensorSpec[]): TensorMap {
  const out: Record<string, Tensor> = {};
  for (const spec of specs) {
    const shape = [0, ...spec.shape.slice(1).map((d) => Math.max(0, d))];
    out[spec.name] = { dtype: spec.dtype, shape, data: allocate(spec.dtype, 0) };
  }
  return out;
}
