/**
 * The models one worker process serves: loaded on first use (or up front with
 * `--models`), one LoadedModel (runner + batcher) per name and version.
 */
import { UnknownModelError } from '@inferq/shared';
import { loadModel } from './loaded-model.js';
import type { LoadModelOptions, LoadedModel } from './loaded-model.js';
import type { ModelRepository } from './repository.js';

export interface ModelPoolOptions extends LoadModelOptions {
  /** Only these model names may be served (`--models a,b`). Default: any model in the repository. */
  readonly allow?: readonly string[] | undefined;
}

export class ModelPool {
  private readonly repo: ModelRepository;
  private readonly options: ModelPoolOptions;
  private readonly loaded = new Map<string, Promise<LoadedModel>>();
  /** Newest served version per name (resolved once; hot reload comes with the model lifecycle work). */
  private readonly defaults = new Map<string, Promise<string>>();

  constructor(repo: ModelRepository, options: ModelPoolOptions) {
    this.repo = repo;
    this.options = options;
  }

  /** Loads every allowed model now (so a worker is warm before it takes work). */
  async preload(): Promise<LoadedModel[]> {
    const names = this.options.allow ?? [];
    const settled = await Promise.allSettled(names.map((n) => this.get(n)));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    return settled.map((s) => (s as PromiseFulfilledResult<LoadedModel>).value);
  }

  async get(name: string, version?: string): Promise<LoadedModel> {
    if (this.options.allow !== undefined && !this.options.allow.includes(name)) {
      throw new UnknownModelError(`model "${name}" is not served by this worker (it serves ${this.options.allow.join(', ')})`, { model: name, version });
    }
    const v = version ?? (await this.defaultVersion(name));
    const key = `${name}@${v}`;
    let p = this.loaded.get(key);
    if (p === undefined) {
      p = loadModel(this.repo, name, v, this.options);
      this.loaded.set(key, p);
      p.catch(() => this.loaded.delete(key)); // a failed load is retried by the next job
    }
    return p;
  }

  /** Every model loaded so far. */
  async models(): Promise<LoadedModel[]> {
    const settled = await Promise.allSettled(this.loaded.values());
    return settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  }

  async close(timeoutMs = 30_000): Promise<void> {
    const models = await this.models();
    await Promise.allSettled(models.map((m) => m.close(timeoutMs)));
  }

  private defaultVersion(name: string): Promise<string> {
    let p = this.defaults.get(name);
    if (p === undefined) {
      p = this.repo.resolve(name).then((mv) => mv.version);
      this.defaults.set(name, p);
      p.catch(() => this.defaults.delete(name));
    }
    return p;
  }
}
