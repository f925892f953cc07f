/**
 * Model configuration: the optional `config.yaml` of a model repository.
 *
 * `<repo>/<name>/config.yaml`            model level: versionPolicy, and defaults for every version
 * `<repo>/<name>/<version>/config.yaml`  version level: inputs, outputs, batching (overrides the model level)
 *
 * Parsing only (text in, typed value out); reading files is the repository's job.
 */
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DTYPES } from './dtype.js';
import type { DType } from './dtype.js';
import { ConfigError } from './errors.js';

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

export interface ModelConfig {
  readonly inputs?: readonly TensorSpec[] | undefined;
  readonly outputs?: readonly TensorSpec[] | undefined;
  readonly batching?: Partial<BatchingConfig> | undefined;
  readonly versionPolicy?: VersionPolicy | undefined;
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
const modelConfigSchema = z.strictObject({
  inputs: z.array(tensorSpecSchema).min(1).optional(),
  outputs: z.array(tensorSpecSchema).min(1).optional(),
  batching: batchingSchema.optional(),
  versionPolicy: versionPolicySchema.optional(),
});

/** Parses and validates config.yaml text. `source` names the file in errors. */
export function parseModelConfig(text: string, source: string): ModelConfig {
  let raw: unknown;
  try {
    raw = parseYaml(text);
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
