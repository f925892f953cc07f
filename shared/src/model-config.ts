/**
 * Model configuration: the optional `config.yaml` of a model repository.
 *
 * `<repo>/<name>/config.yaml`            model level: versionPolicy, traffic, shadow, and defaults for every version
 * `<repo>/<name>/<version>/config.yaml`  version level: inputs, outputs, batching (overrides the model level)
 *
 * Parsing only (text in, typed value out); reading files is the repository's job.
 */
import { createRequire } from 'node:module';
import type { parse } from 'yaml';
import { z } from 'zod';
import { DTYPES } from './dtype.js';
import type { DType } from './dtype.js';
import { ConfigError } from './errors.js';

let yamlParse: typeof parse | undefined;
/** yaml's parser, loaded on the first config.yaml: commands that read none do not load it (CommonJS: required). */
const parseYaml = (): typeof parse => (yamlParse ??= (createRequire(import.meta.url)('yaml') as { parse: typeof parse }).parse);

/** A declared input or output. `shape[0]` is the batch dimension; -1 means "any size". */
export interface TensorSpec {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

/** Dynamic batching settings of one model version. Defaults in {@link DEFAULT_BATCHING}. */
export interface BatchingConfig {
  /** Most rows in one model call. Default 1024. */
  readonly maxBatchSize: number;
  /** Longest time the oldest waiting row waits for a batch to fill, in ms. Default 5. */
  readonly maxDelayMs: number;
  /** Batch sizes the model runs best at; a batch is padded up to the nearest. Default none. */
  readonly preferredBatchSizes: readonly number[];
  /** Rows allowed to wait in the batcher before callers are held back (backpressure). Default 16 × maxBatchSize. */
  readonly maxPendingRows: number;
  /** Batches running at once on one runner, so decode/encode overlap inference. Default 2. */
  readonly maxInFlightBatches: number;
}

export type VersionPolicy =
  | { readonly kind: 'latest'; readonly count: number }
  | { readonly kind: 'all' }
  | { readonly kind: 'specific'; readonly versions: readonly string[] };

/** A version and its share of the jobs; a split lists versions in ascending numeric order. */
export interface TrafficShare {
  readonly version: string;
  readonly weight: number;
}

/** A version run after the primary on a sample of batches, its outputs kept apart for offline comparison. */
export interface ShadowConfig {
  readonly version: string;
  /** Share of batches (by job id) the shadow runs on, in (0, 1]. */
  readonly sample: number;
}

export interface ModelConfig {
  readonly inputs?: readonly TensorSpec[] | undefined;
  readonly outputs?: readonly TensorSpec[] | undefined;
  readonly batching?: Partial<BatchingConfig> | undefined;
  readonly versionPolicy?: VersionPolicy | undefined;
  /** Model level only: jobs without a version split among these versions by a hash of the job id. */
  readonly traffic?: readonly TrafficShare[] | undefined;
  /** Model level only: a version run on a sample of batches after the primary. */
  readonly shadow?: ShadowConfig | undefined;
}

/** Orders integer version strings numerically (exact for every length a version folder may have). */
export function compareVersions(a: string, b: string): number {
  const x = a.replace(/^0+(?=\d)/, '');
  const y = b.replace(/^0+(?=\d)/, '');
  return x.length - y.length || (x < y ? -1 : x > y ? 1 : 0);
}

/** Settings that belong in the model-level config.yaml only. */
export const MODEL_LEVEL_ONLY = ['versionPolicy', 'traffic', 'shadow'] as const;

/** Refuses a version-level config that names a model-level setting; `source` is its file, `modelFile` the model-level one. */
export function checkVersionLevel(config: ModelConfig, source: string, modelFile: string): void {
  const found = MODEL_LEVEL_ONLY.find((k) => config[k] !== undefined);
  if (found !== undefined) throw new ConfigError(`${source}: ${found} belongs in ${modelFile} (model level)`);
}

export const DEFAULT_BATCHING = {
  maxBatchSize: 1024,
  maxDelayMs: 5,
  preferredBatchSizes: [],
  maxInFlightBatches: 2,
} as const satisfies Omit<BatchingConfig, 'maxPendingRows'>;

/** Fills in defaults and checks the settings agree with each other. */
export function resolveBatching(partial: Partial<BatchingConfig> | undefined, where = 'batching'): BatchingConfig {
  const maxBatchSize = partial?.maxBatchSize ?? DEFAULT_BATCHING.maxBatchSize;
  const preferred = [...(partial?.preferredBatchSizes ?? DEFAULT_BATCHING.preferredBatchSizes)].sort((a, b) => a - b);
  const resolved: BatchingConfig = {
    maxBatchSize,
    maxDelayMs: partial?.maxDelayMs ?? DEFAULT_BATCHING.maxDelayMs,
    preferredBatchSizes: preferred,
    maxPendingRows: partial?.maxPendingRows ?? 16 * maxBatchSize,
    maxInFlightBatches: partial?.maxInFlightBatches ?? DEFAULT_BATCHING.maxInFlightBatches,
  };
  const big = preferred.find((p) => p > maxBatchSize);
  if (big !== undefined) {
    throw new ConfigError(`${where}.preferredBatchSizes: ${big} is larger than maxBatchSize ${maxBatchSize}`);
  }
  if (resolved.maxPendingRows < maxBatchSize) {
    throw new ConfigError(`${where}.maxPendingRows: ${resolved.maxPendingRows} is smaller than maxBatchSize ${maxBatchSize}`);
  }
  return resolved;
}

const positiveInt = z.number().int().positive();
const tensorSpecSchema = z.strictObject({
  name: z.string().min(1),
  dtype: z.enum(DTYPES),
  shape: z.array(z.number().int().min(-1)).min(1).max(8),
});
const batchingSchema = z.strictObject({
  maxBatchSize: positiveInt.max(1 << 20).optional(),
  maxDelayMs: z.number().min(0).max(60_000).optional(),
  preferredBatchSizes: z.array(positiveInt).optional(),
  maxPendingRows: positiveInt.optional(),
  maxInFlightBatches: positiveInt.max(64).optional(),
});
const versionPolicySchema = z.union([
  z.literal('latest').transform((): VersionPolicy => ({ kind: 'latest', count: 1 })),
  z.literal('all').transform((): VersionPolicy => ({ kind: 'all' })),
  z.strictObject({ latest: positiveInt }).transform((v): VersionPolicy => ({ kind: 'latest', count: v.latest })),
  z
    .strictObject({ specific: z.array(z.union([z.string().min(1), z.number().int().nonnegative()])).min(1) })
    .transform((v): VersionPolicy => ({ kind: 'specific', versions: v.specific.map(String) })),
]);
const versionSchema = z
  .union([z.string(), z.number().int().nonnegative()])
  .transform(String)
  .refine((v) => /^\d{1,18}$/.test(v), { error: (i) => `version ${JSON.stringify(i.input)} is not an integer version` });
const trafficSchema = z
  .record(
    z.string(),
    z.number().refine((w) => Number.isFinite(w) && w >= 0, { error: (i) => `weight ${String(i.input)} is not a non-negative number` }),
  )
  .check((ctx) => {
    for (const key of Object.keys(ctx.value)) {
      if (!/^\d{1,18}$/.test(key)) ctx.issues.push({ code: 'custom', input: key, path: [key], message: `version "${key}" is not an integer version` });
    }
    const total = Object.values(ctx.value).reduce((n, w) => n + w, 0);
    if (!(total > 0)) ctx.issues.push({ code: 'custom', input: ctx.value, message: `weights sum to ${total}; at least one must be positive` });
  })
  .transform((m): TrafficShare[] =>
    Object.entries(m)
      .map(([version, weight]) => ({ version, weight }))
      .sort((a, b) => compareVersions(a.version, b.version)),
  );
const shadowSchema = z.strictObject({
  version: versionSchema,
  sample: z
    .number()
    .refine((x) => x > 0 && x <= 1, { error: (i) => `sample ${String(i.input)} is not in (0, 1]` }),
});
const modelConfigSchema = z.strictObject({
  inputs: z.array(tensorSpecSchema).min(1).optional(),
  outputs: z.array(tensorSpecSchema).min(1).optional(),
  batching: batchingSchema.optional(),
  versionPolicy: versionPolicySchema.optional(),
  traffic: trafficSchema.optional(),
  shadow: shadowSchema.optional(),
});

/** Parses and validates config.yaml text. `source` names the file in errors. */
export function parseModelConfig(text: string, source: string): ModelConfig {
  let raw: unknown;
  try {
    raw = parseYaml()(text);
  } catch (cause) {
    throw new ConfigError(`${source}: not valid YAML: ${(cause as Error).message}`, { cause });
  }
  const result = modelConfigSchema.safeParse(raw ?? {});
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const path = issue.path.map(String).join('.') || '(root)';
    throw new ConfigError(`${source}: "${path}": ${issue.message}`);
  }
  const v = result.data;
  for (const list of [v.inputs, v.outputs]) {
    const names = new Set<string>();
    for (const spec of list ?? []) {
      if (names.has(spec.name)) throw new ConfigError(`${source}: tensor "${spec.name}" is declared twice`);
      names.add(spec.name);
    }
  }
  return v;
}
