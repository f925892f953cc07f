/**
 * The precompute spec (YAML): which table, which model, the feature space, the key
 * template, how a row becomes model inputs, and where the table goes.
 *
 * ```yaml
 * table: booking-scores
 * model: booking                 # version: "1" (default: the newest)
 * space:
 *   axes:                        # their cartesian product, enumerated lazily
 *     - { name: country, values: [DE, FR, ES] }
 *     - { name: nights, range: { from: 1, to: 14 } }
 *     - { name: property, parquet: { path: properties.parquet, column: property_id } }
 *   # or rows: { parquet: entities.parquet }   — one row per entity (columns named like the features)
 * key: "{country}:{nights}:{property}"
 * encode:
 *   input: features              # default: the model's only input
 *   features:                    # columns of the float32 input, in order
 *     - { axis: country, as: onehot }        # one column per value (vocab: the axis values, or `vocab:`)
 *     - { axis: nights, as: number }         # the value itself
 *     - { axis: property, as: index }        # its position among the axis values
 *   # or featurizer: ./featurize.mjs          — default export (columns, rows) => TensorMap
 * chunkRows: 65536
 * redis: { graceSeconds: 3600 }              # how long the previous version stays readable
 * parquet: { path: webhdfs://namenode:9870/tables/booking-scores }
 * ```
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '@inferq/shared';

const name = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'a name of letters, digits and _ (not starting with a digit)');
const scalar = z.union([z.string(), z.number()]);

const axisSchema = z
  .object({
    name,
    values: z.array(scalar).min(1).optional(),
    range: z.object({ from: z.number().int(), to: z.number().int(), step: z.number().int().positive().default(1) }).strict().optional(),
    parquet: z.object({ path: z.string().min(1), column: z.string().min(1) }).strict().optional(),
  })
  .strict()
  .refine((a) => [a.values, a.range, a.parquet].filter((x) => x !== undefined).length === 1, { message: 'an axis needs exactly one of values, range or parquet' });

const featureSchema = z
  .object({ axis: name, as: z.enum(['onehot', 'index', 'number']), vocab: z.array(scalar).min(1).optional() })
  .strict();

const specSchema = z
  .object({
    table: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _, . and -'),
    model: z.string().min(1),
    version: z.union([z.string(), z.number()]).transform(String).optional(),
    space: z.union([z.object({ axes: z.array(axisSchema).min(1) }).strict(), z.object({ rows: z.object({ parquet: z.string().min(1) }).strict() }).strict()]),
    key: z.string().min(1),
    encode: z
      .object({ input: z.string().optional(), features: z.array(featureSchema).min(1).optional(), featurizer: z.string().min(1).optional() })
      .strict()
      .refine((e) => (e.features === undefined) !== (e.featurizer === undefined), { message: 'encode needs exactly one of features or featurizer' }),
    chunkRows: z.number().int().positive().max(10_000_000).default(65_536),
    redis: z.object({ graceSeconds: z.number().int().nonnegative().default(3600), prefix: z.string().min(1).default('inferq') }).strict().default({ graceSeconds: 3600, prefix: 'inferq' }),
    parquet: z.object({ path: z.string().min(1) }).strict().optional(),
  })
  .strict();

export type PrecomputeSpec = z.infer<typeof specSchema>;
export type AxisSpec = z.infer<typeof axisSchema>;
export type FeatureSpec = z.infer<typeof featureSchema>;

export interface LoadedSpec {
  readonly spec: PrecomputeSpec;
  /** Relative paths in the spec are relative to this folder. */
  readonly baseDir: string;
  /** sha256 of the spec text: a run resumes only a run of the same spec. */
  readonly hash: string;
  /** Column names the key template uses, in order. */
  readonly keyFields: readonly string[];
}

/** Parses and validates a spec; errors name the file and the field. */
export function parseSpec(text: string, where: string, baseDir: string): LoadedSpec {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`${where}: not valid YAML: ${(err as Error).message}`);
  }
  const parsed = specSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const path = issue.path.length === 0 ? '(top level)' : issue.path.join('.');
    throw new ConfigError(`${where}: ${path}: ${issue.message}`);
  }
  const spec = parsed.data;
  const columns = 'axes' in spec.space ? spec.space.axes.map((a) => a.name) : undefined;
  if (columns !== undefined) {
    const dup = columns.find((c, i) => columns.indexOf(c) !== i);
    if (dup !== undefined) throw new ConfigError(`${where}: space.axes: the axis "${dup}" appears twice`);
  }
  const keyFields = [...spec.key.matchAll(/\{([^}]*)\}/g)].map((m) => m[1]!);
  if (keyFields.length === 0) throw new ConfigError(`${where}: key: the template "${spec.key}" names no field (write fields as {name})`);
  for (const f of keyFields) {
    if (columns !== undefined && !columns.includes(f)) throw new ConfigError(`${where}: key: "{${f}}" is not an axis (axes: ${columns.join(', ')})`);
  }
  for (const [i, f] of (spec.encode.features ?? []).entries()) {
    if (columns !== undefined && !columns.includes(f.axis)) throw new ConfigError(`${where}: encode.features.${i}.axis: "${f.axis}" is not an axis (axes: ${columns.join(', ')})`);
    if (columns === undefined && f.as !== 'number' && f.vocab === undefined) {
      throw new ConfigError(`${where}: encode.features.${i}: "${f.as}" of "${f.axis}" needs a vocab when the space is rows from a file`);
    }
  }
  return { spec, baseDir, hash: createHash('sha256').update(text).digest('hex').slice(0, 16), keyFields };
}

export async function loadSpec(path: string): Promise<LoadedSpec> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`spec "${path}": cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return parseSpec(text, path, dirname(resolve(path)));
}
