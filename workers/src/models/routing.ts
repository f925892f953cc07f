/**
 * Which version serves a job: an explicit `version` in the job wins; otherwise the model-level
 * `traffic` split picks one by a stable hash of the job id, so the same id gets the same
 * version on every worker and after every restart. No `traffic`: no version (the pool's newest).
 *
 * ```
 *  job id ─► SHA-1 of its UTF-8 bytes ─► bytes 0..7 (big-endian) >> 11 ─► point in [0, 1) × total weight
 *         ─► versions in ascending numeric order, cumulative weights: the first whose sum passes the point
 *  shadow sample: the same, from bytes 8..15, point < sample (independent of the split)
 * ```
 */
import { createHash } from 'node:crypto';
import type { ModelConfig } from '@inferq/shared';
import type { Logger } from '../logging.js';
import type { ModelPool } from './model-pool.js';
import type { ModelRepository } from './repository.js';

type TrafficShares = NonNullable<ModelConfig['traffic']>;
export type Shadow = NonNullable<ModelConfig['shadow']>;

/** What the router reads: the repository's model-level config and the pool's served versions ({@link routingSource}). */
export interface RoutingSource {
  /** The model-level config.yaml, read anew on each call. */
  modelConfig(name: string): Promise<ModelConfig>;
  /** Versions new jobs may use now, asked for each routed job; undefined: not known (the job goes to the default). */
  served(name: string): readonly string[] | undefined | Promise<readonly string[] | undefined>;
}

/** The usual source: config from the repository, served versions from the pool (loading the model on its first job). */
export function routingSource(repo: Pick<ModelRepository, 'modelConfig'>, pool: Pick<ModelPool, 'get' | 'served'>): RoutingSource {
  return {
    modelConfig: (name) => repo.modelConfig(name),
    served: (name) => pool.served(name) ?? pool.get(name).then(() => pool.served(name)),
  };
}

export interface VersionRouterOptions {
  readonly source: RoutingSource;
  readonly logger: Logger;
  /** How long a model's traffic and shadow settings are reused before they are read again, ms. Default 2000 (the worker's model poll). */
  readonly ttlMs?: number;
  /** Clock, for tests. Default Date.now. */
  readonly now?: () => number;
}

export const DEFAULT_ROUTING_TTL_MS = 2000;
/** Most models whose routing is kept at once (model names come from untrusted jobs). */
const MAX_CACHED = 1024;
const TWO_POW_53 = 2 ** 53;

/** Two independent points in [0, 1) for a job id: `split` chooses its version, `sample` its shadow run. */
export function hashPoints(id: string): { readonly split: number; readonly sample: number } {
  const d = createHash('sha1').update(id, 'utf8').digest();
  return { split: Number(d.readBigUInt64BE(0) >> 11n) / TWO_POW_53, sample: Number(d.readBigUInt64BE(8) >> 11n) / TWO_POW_53 };
}

/** The version of `shares` (ascending, some weight positive) at `point` in [0, 1). */
export function pickVersion(shares: TrafficShares, point: number): string {
  const total = shares.reduce((n, s) => n + s.weight, 0);
  const at = point * total;
  let sum = 0;
  let last: string | undefined;
  for (const s of shares) {
    if (s.weight <= 0) continue;
    sum += s.weight;
    last = s.version;
    if (at < sum) return s.version;
  }
  // Rounding can leave `at` a hair above the last sum.
  return last!;
}

/** The routing settings of one model, as read at one time. */
interface Entry {
  readonly at: number;
  readonly traffic: TrafficShares | undefined;
  readonly shadow: Shadow | undefined;
}

export class VersionRouter {
  private readonly source: RoutingSource;
  private readonly log: Logger;
  private readonly ttlMs: number;
  private readonly now: () => number;
  private readonly cache = new Map<string, Promise<Entry>>();
  /** Per model, the last traffic/served combination a warning was logged for. */
  private readonly warned = new Map<string, string>();

  constructor(options: VersionRouterOptions) {
    this.source = options.source;
    this.log = options.logger;
    this.ttlMs = options.ttlMs ?? DEFAULT_ROUTING_TTL_MS;
    this.now = options.now ?? Date.now;
  }

  /**
   * The version to serve job `jobId` of `model` with: `explicit` when given, else the traffic
   * split's among the versions served now; undefined means the pool's default. A model whose
   * config or versions cannot be read routes to the default, where the pool raises its own error.
   */
  async route(model: string, jobId: string, explicit?: string): Promise<string | undefined> {
    if (explicit !== undefined) return explicit;
    const traffic = (await this.entry(model)).traffic;
    if (traffic === undefined) return undefined;
    let served: readonly string[] | undefined;
    try {
      served = await this.source.served(model);
    } catch (err) {
      this.log.debug({ err, model }, 'no routing for this model: its served versions are not known');
      return undefined;
    }
    const shares = served === undefined ? undefined : this.servedShares(model, traffic, served);
    return shares === undefined ? undefined : pickVersion(shares, hashPoints(jobId).split);
  }

  /** The model's shadow, when it has one and batch `id` is in its sample. */
  async shadowFor(model: string, id: string): Promise<Shadow | undefined> {
    const shadow = (await this.entry(model)).shadow;
    return shadow !== undefined && hashPoints(id).sample < shadow.sample ? shadow : undefined;
  }

  /** Forgets what was read of `model` (every model without one): the next job reads the config again. */
  invalidate(model?: string): void {
    if (model === undefined) this.cache.clear();
    else this.cache.delete(model);
  }

  private async entry(model: string): Promise<Entry> {
    const now = this.now();
    const p = this.cache.get(model);
    const fresh = p === undefined ? undefined : await p;
    if (fresh !== undefined && now - fresh.at < this.ttlMs) return fresh;
    const current = this.cache.get(model);
    if (current !== undefined && current !== p) return current; // another job is reading it anew
    if (p === undefined && this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
    const next = this.read(model, now);
    this.cache.set(model, next);
    return next;
  }

  private async read(model: string, at: number): Promise<Entry> {
    try {
      const config = await this.source.modelConfig(model);
      return { at, traffic: config.traffic, shadow: config.shadow };
    } catch (err) {
      // The pool reads the same files and fails the job with its own error (or its allow-list's).
      this.log.debug({ err, model }, 'no routing for this model: its config could not be read');
      return { at, traffic: undefined, shadow: undefined };
    }
  }

  /** The traffic among `served` versions (undefined: none of them); warns once per traffic/served combination that drops some. */
  private servedShares(model: string, traffic: TrafficShares, served: readonly string[]): TrafficShares | undefined {
    if (traffic.every((s) => s.weight <= 0 || served.includes(s.version))) return traffic;
    const kept = traffic.filter((s) => s.weight > 0 && served.includes(s.version));
    const dropped = traffic.filter((s) => s.weight > 0 && !served.includes(s.version)).map((s) => s.version);
    const key = JSON.stringify([traffic, served]);
    if (dropped.length > 0 && this.warned.get(model) !== key) {
      this.warned.set(model, key);
      if (this.warned.size > MAX_CACHED) this.warned.delete(this.warned.keys().next().value!);
      const where = kept.length > 0 ? `its jobs go to ${kept.map((s) => s.version).join(', ')}` : 'its jobs go to the newest served version';
      this.log.warn({ model, unserved: dropped, served }, `traffic of model "${model}" names versions its policy does not serve (${dropped.join(', ')}); ${where}`);
    }
    return kept.length > 0 ? kept : undefined;
  }
}
