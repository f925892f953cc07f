/** What the sinks are told of a job: its identity at the source, where its results go, and its outputs. */
import type { Envelope } from '@inferq/shared';
import type { SinkJob, SinkResult } from '../sinks/sink.js';
import type { Delivery } from '../sources/source.js';
import type { Inference } from './infer.js';

/** What a sink needs of a job: its identity at the source and where its results go. */
export function sinkJob(d: Delivery, env: Envelope): SinkJob {
  return {
    id: env.id,
    run: d.run,
    rerun: d.rerun,
    rowIds: env.rowIds,
    sinks: env.sinks,
    replyTo: env.replyTo,
    jobs: env.jobs?.map((j) => ({ id: j.id, rows: j.rows })),
    position: d.position,
  };
}

export function sinkResult(r: Inference): SinkResult {
  return { outputs: r.outputs, rows: r.rows, model: r.model.name, version: r.model.version };
}
