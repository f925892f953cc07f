/** The transport-neutral step of every queue worker: check a decoded envelope against its model and run it through the model's batcher. */
import { DeadlineExceededError, jobSuffix, validateInputs } from '@inferq/shared';
import type { Envelope, NonFinitePolicy, TensorMap } from '@inferq/shared';
import type { LoadedModel } from '../models/loaded-model.js';
import type { ModelPool } from '../models/model-pool.js';

export interface Inference {
  readonly model: LoadedModel;
  readonly outputs: TensorMap;
  readonly rows: number;
}

/** Validates the envelope's tensors and deadline, then awaits the model's outputs for its rows. */
export async function inferEnvelope(models: Pick<ModelPool, 'get'>, envelope: Envelope, nonFinite: NonFinitePolicy): Promise<Inference> {
  const id = envelope.id;
  const model = await models.get(envelope.model, envelope.version);
  const rows = validateInputs(envelope.tensors, model.inputs, { jobId: id, model: model.name, version: model.version, nonFinite });
  if (envelope.deadline !== undefined && envelope.deadline <= Date.now()) {
    throw new DeadlineExceededError(`job deadline passed ${Date.now() - envelope.deadline} ms before it started${jobSuffix(id)}`, { jobId: id, model: model.name });
  }
  const outputs = await model.batcher.submit({ id, tensors: envelope.tensors, rows, deadline: envelope.deadline });
  return { model, outputs, rows };
}
