/**
 * Model repository, Triton / TF-Serving style:
 *
 * ```
 * <repo>/<name>/config.yaml             optional: versionPolicy, defaults for all versions
 * <repo>/<name>/<version>/model.onnx    the model (version folders are integers); or a TF.js
 *                                       model.json (+ weight files), or a TensorFlow saved_model.pb
 * <repo>/<name>/<version>/config.yaml   optional: inputs, outputs, batching
 * ```
 *
 * A bare `model.onnx` in a version folder just works: inputs and outputs are read
 * from the model and batching gets {@link DEFAULT_BATCHING}. Only complete version
 * folders count (completeness.ts); the repository keeps no state: a {@link ModelPool}
 * adds the two-scan rule for versions that appear while it serves.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, ModelLoadError, UnknownModelError, checkVersionLevel, parseModelConfig, printable, resolveBatching } from '@inferq/shared';
import type { BatchingConfig, ModelConfig, TensorSpec, VersionPolicy } from '@inferq/shared';
import { MODEL_FILES, modelFormatOf } from '../runners/select.js';
import type { ModelFormat } from '../runners/select.js';
import { scanVersion } from './completeness.js';
import type { VersionScan } from './completeness.js';

/** One servable model version, as found in the repository (not loaded yet). */
export interface ModelVersion {
  readonly name: string;
  readonly version: string;
  /** The version folder. */
  readonly dir: string;
  /** Path of the model file (model.onnx, model.json or saved_model.pb). */
  readonly source: string;
  /** What the folder holds, which decides the runner (runners/select.ts). */
  readonly format: ModelFormat;
  readonly inputs?: readonly TensorSpec[] | undefined;
  readonly outputs?: readonly TensorSpec[] | undefined;
  /** Batching as configured (model level merged with version level), before defaults. */
  readonly batchingConfig: Partial<BatchingConfig>;
  /** With defaults filled in. */
  readonly batching: BatchingConfig;
  /** The model file's bytes (for a TF.js model: model.json only; its runner reads the folder). */
  readModel(): Promise<Uint8Array>;
}

const CONFIG_FILE = 'config.yaml';
const VERSION_DIR = /^\d{1,18}$/;
/** Model names: one path segment of letters, digits, `_`, `.` and `-` that does not start with `.` (so never `.`, `..` or a hidden folder). */
export const MODEL_NAME = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,255}$/;

/** Refuses a model name that is not one plain folder of the repository (names come from queues: untrusted). */
export function checkModelName(name: string): void {
  if (!MODEL_NAME.test(name)) {
    throw new UnknownModelError(`model name "${printable(name)}" is not valid: use letters, digits, _, . and - (1-256, not starting with .)`, { model: name });
  }
}

/** Refuses a version that is not a version folder name (an integer). */
export function checkVersion(name: string, version: string): void {
  if (!VERSION_DIR.test(version)) {
    throw new UnknownModelError(`model "${name}" version "${printable(version)}" is not valid: versions are integers`, { model: name, version, code: 'UNKNOWN_VERSION' });
  }
}

export class ModelRepository {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  /** Model names (folders holding at least one version folder). */
  async models(): Promise<string[]> {
    const entries = await this.readDir(this.root, `model repository ${this.root}`);
    const names: string[] = [];
    for (const e of entries.filter((x) => x.isDirectory()).sort((a, b) => a.name.localeCompare(b.name))) {
      if ((await this.versionDirs(e.name)).length > 0) names.push(e.name);
    }
    return names;
  }

  /** Versions the model's policy serves among its complete ones, ascending. */
  async versions(name: string): Promise<string[]> {
    const { complete, policy } = await this.scan(name);
    return applyPolicy(
      complete.map((c) => c.version),
      policy,
    );
  }

  /**
   * The model's complete version folders, ascending (with the marker rule applied: when any
   * version has a `_READY`/`_SUCCESS` marker, only marked ones), and its version policy.
   * An UnknownModelError when the model has no version folder at all.
   */
  async scan(name: string): Promise<{ complete: VersionScan[]; policy: VersionPolicy }> {
    checkModelName(name);
    const all = await this.versionDirs(name);
    if (all.length === 0) {
      const known = await this.models();
      throw new UnknownModelError(`unknown model "${name}" in repository ${this.root}; available: ${known.length === 0 ? 'none' : known.join(', ')}`, { model: name });
    }
    const policy = (await this.modelConfig(name)).versionPolicy ?? DEFAULT_POLICY;
    const scans = (await Promise.all(all.map((v) => scanVersion(join(this.root, name, v), v)))).filter((s): s is VersionScan => s !== undefined);
    const marked = scans.some((s) => s.marker);
    return { complete: marked ? scans.filter((s) => s.marker) : scans, policy };
  }

  /** Finds a version; without `version`, the newest the policy serves. */
  async resolve(name: string, version?: string): Promise<ModelVersion> {
    checkModelName(name);
    if (version !== undefined) checkVersion(name, version);
    const served = await this.versions(name);
    const v = version ?? served[served.length - 1];
    if (v === undefined) throw await this.noCompleteVersion(name);
    if (!served.includes(v)) {
      const all = await this.versionDirs(name);
      const why = all.includes(v) ? 'is present but not served (incomplete, or not chosen by its versionPolicy)' : 'does not exist';
      throw new UnknownModelError(`model "${name}" version "${v}" ${why}; served versions: ${served.join(', ')}`, { model: name, version: v, code: 'UNKNOWN_VERSION' });
    }
    return this.describe(name, v);
  }

  /** A complete version folder, whatever the policy says (the caller decided it serves it). */
  async describe(name: string, v: string): Promise<ModelVersion> {
    checkModelName(name);
    checkVersion(name, v);
    const dir = join(this.root, name, v);
    let format: ModelFormat;
    try {
      format = await modelFormatOf(dir);
    } catch (cause) {
      throw new ModelLoadError(`model "${name}" version "${v}": ${(cause as Error).message}`, { cause, model: name, version: v });
    }
    const source = join(dir, format === 'onnx' ? MODEL_FILES.onnx : format === 'saved-model' ? MODEL_FILES.savedModel : MODEL_FILES.tfjs);
    const modelLevel = await this.modelConfig(name);
    const versionLevel = await this.readConfig(join(dir, CONFIG_FILE));
    checkVersionLevel(versionLevel, join(dir, CONFIG_FILE), join(this.root, name, CONFIG_FILE));
    const batchingConfig = { ...modelLevel.batching, ...versionLevel.batching };
    const batching = resolveBatching(batchingConfig, `${name}:${v} batching`);
    return {
      name,
      version: v,
      dir,
      source,
      format,
      inputs: versionLevel.inputs ?? modelLevel.inputs,
      outputs: versionLevel.outputs ?? modelLevel.outputs,
      batchingConfig,
      batching,
      readModel: async () => {
        try {
          return new Uint8Array(await readFile(source));
        } catch (cause) {
          throw new ModelLoadError(`cannot read ${source}: ${(cause as Error).message}`, { cause, model: name, version: v });
        }
      },
    };
  }

  /** Why a model with version folders has none complete: the newest folder's reason. */
  private async noCompleteVersion(name: string): Promise<UnknownModelError> {
    const newest = (await this.versionDirs(name)).at(-1)!;
    const why = await modelFormatOf(join(this.root, name, newest)).then(
      () => 'its files are incomplete, or it lacks the _READY marker other versions have',
      (err: unknown) => (err as Error).message,
    );
    return new UnknownModelError(`model "${name}" has no complete version (docs/models.md); the newest, version "${newest}": ${why}`, { model: name, version: newest, code: 'UNKNOWN_VERSION' });
  }

  /** The model-level config.yaml of `name` (empty when there is none), read anew on each call. */
  async modelConfig(name: string): Promise<ModelConfig> {
    checkModelName(name);
    const cfg = await this.readConfig(join(this.root, name, CONFIG_FILE));
    return cfg;
  }

  private async readConfig(path: string): Promise<ModelConfig> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw new ConfigError(`cannot read ${path}: ${(cause as Error).message}`, { cause });
    }
    return parseModelConfig(text, path);
  }

  private async versionDirs(name: string): Promise<string[]> {
    let entries;
    try {
      entries = await readdir(join(this.root, name), { withFileTypes: true });
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      throw new ModelLoadError(`cannot list ${join(this.root, name)}: ${(cause as Error).message}`, { cause, model: name });
    }
    return entries
      .filter((e) => e.isDirectory() && VERSION_DIR.test(e.name))
      .map((e) => e.name)
      .sort((a, b) => Number(a) - Number(b));
  }

  private async readDir(path: string, what: string) {
    try {
      return await readdir(path, { withFileTypes: true });
    } catch (cause) {
      throw new ConfigError(`${what}: cannot list ${path}: ${(cause as Error).message}`, { cause });
    }
  }
}

const DEFAULT_POLICY: VersionPolicy = { kind: 'latest', count: 1 };

/** The versions (ascending) a policy serves out of `ascending`. */
export function applyPolicy(ascending: readonly string[], policy: VersionPolicy): string[] {
  switch (policy.kind) {
    case 'all':
      return [...ascending];
    case 'latest':
      return ascending.slice(-policy.count);
    case 'specific':
      return ascending.filter((v) => policy.versions.includes(v));
  }
}
