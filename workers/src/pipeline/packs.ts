/**
 * A packed envelope (the producer's linger): many small jobs whose rows travel as one tensor.
 *
 * ```
 *  every job in time and the pack valid ─► one batcher entry ─► one reply entry for all (`jobs` lists them)
 *  otherwise (a job past its deadline, a NaN in one job's row…) ─► each job alone:
 *      bad ones ─► dead letters (and error replies) first
 *      good ones ─► one reply entry listing only them
 * ```
 *
 * Each packed job is routed by its own id (an explicit version applies to them all): a pack whose
 * jobs go to different versions runs its jobs alone too, with one reply entry per version.
 *
 * Dead letters go out before the reply, which marks the run answered: a crash between the two
 * repeats a dead letter, never a reply; a run found answered writes only its Parquet rows.
 */
import { allocate, sliceRows, unpackJobs } from '@inferq/shared';
import type { Envelope, Tensor, TensorMap } from '@inferq/shared';
import type { Answered, Delivery } from '../sources/source.js';
import { deadLetterOf } from './dead-letter.js';
import type { Done, JobPipeline } from './handle-job.js';
import { sinkJob, sinkResult } from './sink-job.js';
import type { Inference } from './infer.js';
import type { JobTrack } from './track.js';

/** Runs a pack; resolves with its rows, and its jobs written, once every reply and row is durable. */
export async function runPack(p: JobPipeline, d: Delivery, envelope: Envelope, answered: Answered, track: JobTrack): Promise<Done> {
  const now = Date.now();
  const versions = await Promise.all(envelope.jobs!.map((j) => p.versionOf(envelope.model, j.id, envelope.version)));
  const oneVersion = versions.every((v) => v === versions[0]);
  if (oneVersion && (answered !== 'no' || envelope.jobs!.every((j) => j.deadline === undefined || j.deadline > now))) {
    let result: Inference | undefined;
    try {
      result = await p.infer({ ...envelope, version: versions[0], deadline: undefined }, answered, track);
    } catch (err) {
      if (p.shouldRetry(d, err)) throw err;
    }
    if (result !== undefined) {
      if (envelope.replyTo !== undefined && answered !== 'yes') await p.opts.replies.write(sinkJob(d, envelope), sinkResult(result));
      let start = 0;
      const parts = unpackJobs(envelope).map((part) => {
        const outputs = sliceRows(result.outputs, start, start + part.rows);
        start += part.rows;
        return [part, { ...result, outputs, rows: part.rows }] as const;
      });
      if (answered === 'no') p.opts.shadow?.offer(envelope.model, envelope.id, parts.map(([part]) => ({ envelope: part, version: result.model.version })));
      const ok = await p.writeRows(d, parts, track);
      return { rows: result.rows, ok };
    }
  }
  if (oneVersion) p.counters.packsSplit++;
  return runEach(p, d, envelope, unpackJobs(envelope), answered, track);
}

/** Runs a pack's jobs one by one: the bad ones are dead-lettered alone. */
async function runEach(p: JobPipeline, d: Delivery, envelope: Envelope, parts: readonly Envelope[], answered: Answered, track: JobTrack): Promise<Done> {
  const settled = await Promise.allSettled(parts.map((env) => p.infer(env, answered, track)));
  const retriable = settled.find((s) => s.status === 'rejected' && p.shouldRetry(d, s.reason));
  if (retriable !== undefined) throw (retriable as PromiseRejectedResult).reason;
  const ok = settled.flatMap((s, i) => (s.status === 'fulfilled' ? [[parts[i]!, s.value] as const] : []));
  if (answered !== 'yes') {
    const failed = settled.flatMap((s, i) => (s.status === 'rejected' ? [deadLetterOf(s.reason, parts[i]!.id, parts[i], d, true)] : []));
    const failedRows = settled.flatMap((s, i) => (s.status === 'rejected' ? [parts[i]!.rows] : []));
    if (failed.length > 0) await p.deadLetter(d, failed, track, failedRows);
    // A reply entry carries one version: the jobs that ran on each get one of their own.
    for (const group of envelope.replyTo === undefined ? [] : byVersion(ok)) {
      const jobs = group.map(([env]) => ({ id: env.id, rows: env.rows }));
      const rows = group.reduce((n, [, r]) => n + r.rows, 0);
      const reply: Envelope = { ...envelope, jobs, rows, rowIds: concatIds(group.map(([env]) => env.rowIds)) };
      await p.opts.replies.write(sinkJob(d, reply), { ...sinkResult(group[0]![1]), outputs: concatRows(group.map(([, r]) => r.outputs)), rows });
    }
  }
  if (answered === 'no') p.opts.shadow?.offer(envelope.model, envelope.id, ok.map(([env, r]) => ({ envelope: env, version: r.model.version })));
  const written = await p.writeRows(d, ok, track);
  return { rows: ok.reduce((n, [, r]) => n + r.rows, 0), ok: written };
}

type Part = readonly [Envelope, Inference];

/** Parts grouped by the version that ran them, versions in order of first appearance. */
function byVersion(parts: readonly Part[]): Part[][] {
  const groups = new Map<string, Part[]>();
  for (const part of parts) {
    const v = part[1].model.version;
    let g = groups.get(v);
    if (g === undefined) groups.set(v, (g = []));
    g.push(part);
  }
  return [...groups.values()];
}

function concatIds(lists: readonly (readonly string[] | undefined)[]): string[] | undefined {
  return lists.every((l) => l !== undefined) ? lists.flatMap((l) => [...l!]) : undefined;
}

/** The rows of several output maps (same names, dtypes and row shapes), one after the other. */
function concatRows(maps: readonly TensorMap[]): TensorMap {
  const out: Record<string, Tensor> = {};
  for (const name of Object.keys(maps[0]!)) {
    const parts = maps.map((m) => m[name]!);
    const first = parts[0]!;
    const rows = parts.reduce((n, t) => n + (t.shape[0] ?? 0), 0);
    const data = allocate(first.dtype, parts.reduce((n, t) => n + t.data.length, 0));
    let at = 0;
    for (const t of parts) {
      (data as Float32Array).set(t.data as Float32Array, at);
      at += t.data.length;
    }
    out[name] = { dtype: first.dtype, shape: [rows, ...first.shape.slice(1)], data };
  }
  return out;
}
