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
 *
 * Files the spec names: Parquet inputs are relative to the spec's folder (or absolute, or a
 * URI); the featurizer must lie inside the spec's folder (relative, no `..`, symlinks followed).
 * A spec that came from a queue (a scheduled run) carries a {@link SpecTrust} set by the worker:
 * its local files must then resolve inside `--allow-specs`, its remote inputs and Parquet
 * output under the folders the worker allows, and its space is bounded.
 */
import { createHash } from 'node:crypto';
import { access, readFile, realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError, InferqError, printable } from '@inferq/shared';
import { MODEL_NAME } from '../models/repository.js';
import { canonicalKey } from '../sinks/sink-set.js';

/** Most values one axis may have (a range is counted before anything is allocated). */
export const MAX_AXIS_VALUES = 10_000_000;
/** Largest chunk: the unit of memory (its rows' features and outputs) and of resumption. */
export const MAX_CHUNK_ROWS = 1_048_576;

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

/**
 * A path that stays inside its folder by its spelling alone: relative, no `..` segment, no
 * scheme or drive, no backslash or control character (symlinks are checked when it is used).
 */
export function isPlainRelative(path: string): boolean {
  // eslint-disable-next-line no-control-regex
  if (path === '' || isAbsolute(path) || path.includes('\\') || /^[A-Za-z][A-Za-z0-9+.-]*:/.test(path) || /[\u0000-\u001f\u007f]/.test(path)) return false;
  return !path.split('/').includes('..');
}

const featurizerPath = z
  .string()
  .min(1)
  .max(1024)
  .superRefine((p, ctx) => {
    if (!isPlainRelative(p) || !/\.m?js$/.test(p)) {
      ctx.addIssue({ code: 'custom', message: `"${printable(p)}" must be a relative path inside the spec's folder (no absolute path, no "..", no URL) to a .mjs or .js file` });
    }
  });

const featureSchema = z
  .object({ axis: name, as: z.enum(['onehot', 'index', 'number']), vocab: z.array(scalar).min(1).optional() })
  .strict();

const specSchema = z
  .object({
    table: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _, . and -'),
    model: z.string().regex(MODEL_NAME, 'a model folder name: letters, digits, _, . and - (1-256, not starting with .)'),
    version: z
      .union([z.string(), z.number()])
      .transform(String)
      .pipe(z.string().regex(/^\d{1,18}$/, 'an integer (a version folder of the model)'))
      .optional(),
    space: z.union([z.object({ axes: z.array(axisSchema).min(1) }).strict(), z.object({ rows: z.object({ parquet: z.string().min(1) }).strict() }).strict()]),
    key: z.string().min(1),
    encode: z
      .object({ input: z.string().optional(), features: z.array(featureSchema).min(1).optional(), featurizer: featurizerPath.optional() })
      .strict()
      .refine((e) => (e.features === undefined) !== (e.featurizer === undefined), { message: 'encode needs exactly one of features or featurizer' }),
    chunkRows: z.number().int().positive().max(MAX_CHUNK_ROWS).default(65_536),
    redis: z
      .object({
        graceSeconds: z.number().int().nonnegative().default(3600),
        prefix: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'letters, digits, _, ., : and - (at most 64)').default('inferq'),
      })
      .strict()
      .default({ graceSeconds: 3600, prefix: 'inferq' }),
    parquet: z.object({ path: z.string().min(1) }).strict().optional(),
  })
  .strict();

export type PrecomputeSpec = z.infer<typeof specSchema>;
export type AxisSpec = z.infer<typeof axisSchema>;
export type FeatureSpec = z.infer<typeof featureSchema>;

/**
 * What a spec that came from a queue may reach, from the worker's own flags (never from the job).
 * Paths here are real paths; folders are canonical keys (`canonicalKey`).
 */
export interface SpecTrust {
  /** `--allow-specs`: local files the spec names must resolve inside it; undefined: the spec may name none. */
  readonly root: string | undefined;
  /** The flag that set `root`, for messages. */
  readonly rootFlag: '--allow-specs' | '--specs-root';
  /** `--allow-inputs`: remote Parquet inputs (webhdfs://, hdfs://) only under these; empty: none. */
  readonly inputs: readonly string[];
  /** `--allow-outputs`: the Parquet output folder only under these; empty: no Parquet output. */
  readonly outputs: readonly string[];
  /** Most rows the space may have. */
  readonly maxRows: number;
}

export interface LoadedSpec {
  readonly spec: PrecomputeSpec;
  /** Relative paths in the spec are relative to this folder. */
  readonly baseDir: string;
  /** sha256 of the spec text: a run resumes only a run of the same spec. */
  readonly hash: string;
  /** Column names the key template uses, in order. */
  readonly keyFields: readonly string[];
  /** Set when the spec came from a queue: what its files and outputs may be. */
  readonly trust?: SpecTrust | undefined;
}

/** Parses and validates a spec; errors name the file and the field. */
export function parseSpec(text: string, where: string, baseDir: string, trust?: SpecTrust): LoadedSpec {
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
    // Sizes are checked before any axis is built: a range is an array of its values.
    let known = 1;
    for (const [i, a] of ('axes' in spec.space ? spec.space.axes : []).entries()) {
      const n = a.range === undefined ? (a.values?.length ?? 1) : a.range.to < a.range.from ? 0 : Math.floor((a.range.to - a.range.from) / a.range.step) + 1;
      if (n > MAX_AXIS_VALUES) throw new ConfigError(`${where}: space.axes.${i}.range: ${n} values, more than the ${MAX_AXIS_VALUES} an axis may have`);
      known *= n;
    }
    if (trust !== undefined && known > trust.maxRows) throw new ConfigError(`${where}: space: at least ${known} rows, more than the ${trust.maxRows} this worker runs`);
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
  return { spec, baseDir, hash: createHash('sha256').update(text).digest('hex').slice(0, 16), keyFields, trust };
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

/** Whether `path` is `root` or lies below it (both absolute and normalized). */
export function isInside(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (rel !== '..' && !rel.startsWith('../') && !isAbsolute(rel));
}

/** The real path of `path` (symlinks followed), refused unless it lies inside `root` (a real path). */
export async function realpathInside(path: string, root: string, what: string, rootName: string): Promise<string> {
  let real: string;
  try {
    real = await realpath(path);
  } catch (err) {
    throw new ConfigError(`${what}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!isInside(real, root)) throw new ConfigError(`${what} is outside ${rootName} ${root}${real === path ? '' : ` (it resolves to ${real})`}`);
  return real;
}

const REMOTE = /^[a-z][a-z0-9+.-]*:\/\//i;
const FILE_URL = /^file:\/\//i;

/** Whether a path the spec names is a remote URI (webhdfs://, hdfs://), not a local file. */
export const isRemote = (path: string): boolean => REMOTE.test(path) && !FILE_URL.test(path);

/** The Parquet inputs a spec names, each with its field. */
export function specInputs(spec: PrecomputeSpec): { field: string; path: string }[] {
  if ('rows' in spec.space) return [{ field: 'space.rows.parquet', path: spec.space.rows.parquet }];
  return spec.space.axes.flatMap((a, i) => (a.parquet === undefined ? [] : [{ field: `space.axes.${i}.parquet.path`, path: a.parquet.path }]));
}

/** Resolves every file the spec names (inputs and featurizer) without reading them: what is not allowed fails now. */
export async function checkSpecFiles(spec: LoadedSpec, inputs: (path: string) => boolean = () => true): Promise<void> {
  for (const { field, path } of specInputs(spec.spec)) {
    if (!inputs(path)) continue;
    const where = await resolveInput(spec, path, field);
    // With a trust, resolveInput found the file already (its real path).
    if ('local' in where && spec.trust === undefined) {
      await access(where.local).catch((err: NodeJS.ErrnoException) => {
        throw new ConfigError(`${field} "${printable(path)}": cannot read it (${err.code ?? err.message})`);
      });
    }
  }
  if (spec.spec.encode.featurizer !== undefined) await resolveFeaturizer(spec, spec.spec.encode.featurizer);
}

/**
 * Where a Parquet input named at `field` is: a local file (relative to the spec's folder) or a
 * remote URI, each checked against the spec's trust when it has one.
 */
export async function resolveInput(spec: LoadedSpec, path: string, field: string): Promise<{ local: string } | { remote: string }> {
  const what = `${field} "${printable(path)}"`;
  const trust = spec.trust;
  if (isRemote(path)) {
    if (trust !== undefined) {
      const key = canonical(path, what);
      if (!trust.inputs.some((k) => key === k || key.startsWith(`${k}/`))) {
        throw new ConfigError(`${what} is not allowed: ${trust.inputs.length === 0 ? 'this worker reads no remote inputs (start it with --allow-inputs <folder>)' : `this worker reads remote inputs under ${trust.inputs.join(', ')} only (--allow-inputs)`}`);
      }
    }
    return { remote: path };
  }
  let local: string;
  try {
    local = FILE_URL.test(path) ? fileURLToPath(path) : path;
  } catch (err) {
    throw new ConfigError(`${what}: ${(err as Error).message}`);
  }
  const abs = isAbsolute(local) ? local : resolve(spec.baseDir, local);
  if (trust === undefined) return { local: abs };
  if (trust.root === undefined) throw new ConfigError(`${what}: this worker reads no spec files (start it with --allow-specs <dir>)`);
  return { local: await realpathInside(abs, trust.root, what, trust.rootFlag) };
}

/** The featurizer module's real path: inside the spec's folder (symlinks followed), and inside the trust root. */
export async function resolveFeaturizer(spec: LoadedSpec, featurizer: string): Promise<string> {
  const what = `encode.featurizer "${printable(featurizer)}"`;
  if (!isPlainRelative(featurizer)) throw new ConfigError(`${what}: must be a relative path inside the spec's folder (no absolute path, no "..")`);
  if (spec.trust !== undefined && spec.trust.root === undefined) throw new ConfigError(`${what}: this worker reads no spec files (start it with --allow-specs <dir>)`);
  const folder = await realpathInside(spec.baseDir, spec.trust?.root ?? '/', `${what}: the spec's folder`, spec.trust?.rootFlag ?? 'the root');
  return realpathInside(join(spec.baseDir, featurizer), folder, what, "the spec's folder");
}

/** Refuses a Parquet output folder the spec's trust does not allow (local folders by the real path of what exists of them). */
export async function checkOutput(spec: LoadedSpec): Promise<void> {
  const trust = spec.trust;
  const path = spec.spec.parquet?.path;
  if (trust === undefined || path === undefined) return;
  const what = `parquet.path "${printable(path)}"`;
  if (trust.outputs.length === 0) throw new ConfigError(`${what} is not allowed: this worker writes no Parquet (start it with --allow-outputs <folder>)`);
  const key = await realKey(canonical(path, what));
  if (!trust.outputs.some((k) => key === k || key.startsWith(`${k}/`))) {
    throw new ConfigError(`${what} is not allowed: this worker writes Parquet under ${trust.outputs.join(', ')} only (--allow-outputs)`);
  }
}

/** A folder's canonical key with a local path's existing part replaced by its real path (a symlink out is seen). */
export async function realKey(key: string): Promise<string> {
  if (!key.startsWith('file://')) return key;
  let head = key.slice('file://'.length);
  const rest: string[] = [];
  for (;;) {
    try {
      return `file://${join(await realpath(head), ...rest)}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || head === dirname(head)) throw new ConfigError(`${key}: ${(err as Error).message}`);
      rest.unshift(basename(head));
      head = dirname(head);
    }
  }
}

function canonical(uri: string, what: string): string {
  try {
    return canonicalKey(uri);
  } catch (err) {
    if (err instanceof InferqError) throw new ConfigError(`${what}: ${err.message}`);
    throw err;
  }
}
