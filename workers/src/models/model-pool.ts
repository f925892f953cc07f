/**
 * The models one worker process serves: one LoadedModel (runner + batcher) per name and
 * version, loaded on first use (or up front with `--models`), swapped while serving.
 *
 * ```
 *  refresh() (poll, SIGHUP, control message)
 *    scan ─► complete + stable versions ─► policy ─► target
 *      new default? ─► load + warm BESIDE the serving one ──fails──► logged, metered, old keeps serving
 *                          │ ok
 *      served := target (atomic: the next get() sees it)
 *      versions no longer served ─► out of the pool ─► their batcher drains ─► runner disposed
 * ```
 *
 * A get() takes its version from `served` at that moment; a job that already holds a model
 * finishes on it, because a version leaves the pool before its batcher closes and the close
 * drains what was submitted.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { UnknownModelError, printable } from '@inferq/shared';
import type { Logger } from '../logging.js';
import type { Fingerprint } from './completeness.js';
import { loadVersion } from './loaded-model.js';
import type { LoadModelOptions, LoadedModel } from './loaded-model.js';
import { applyPolicy, checkVersion } from './repository.js';
import type { ModelRepository } from './repository.js';

export interface ModelPoolOptions extends LoadModelOptions {
  /** Only these model names may be served (`--models a,b`). Default: any model in the repository. */
  readonly allow?: readonly string[] | undefined;
  /** At most this many versions loaded (`--max-loaded-models`): the least recently used idle one is unloaded. Default: no limit. */
  readonly maxLoadedModels?: number | undefined;
  /** How long a retired or evicted version may take to finish its batches. Default 30 s. */
  readonly drainTimeoutMs?: number | undefined;
}

/** What the pool knows of one model's folder. */
interface ModelState {
  /** Versions new jobs may use, ascending; the last is the default. */
  served: readonly string[];
  /** Versions that passed the completeness rule (kept while their folder stays). */
  accepted: Set<string>;
  /** Fingerprints of the complete versions at the last scan (two equal scans = not being written). */
  seen: Map<string, Fingerprint>;
  /** Versions whose load failed, with the fingerprint that failed: tried again once the folder changes. */
  failed: Map<string, Fingerprint>;
}

interface Slot {
  readonly name: string;
  readonly version: string;
  readonly loading: Promise<LoadedModel>;
  model?: LoadedModel;
}

const key = (name: string, version: string): string => `${name}@${version}`;
const byNumber = (a: string, b: string): number => Number(a) - Number(b);

export class ModelPool {
  private readonly repo: ModelRepository;
  private readonly options: ModelPoolOptions;
  private readonly log: Logger;
  private readonly states = new Map<string, ModelState>();
  private readonly firstScans = new Map<string, Promise<ModelState>>();
  /** Loaded and loading versions; Map order is use order (least recent first). */
  private readonly slots = new Map<string, Slot>();
  /** Versions out of the pool whose batches are still draining. */
  private readonly unloading = new Set<Promise<void>>();
  private refreshing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(repo: ModelRepository, options: ModelPoolOptions) {
    this.repo = repo;
    this.options = options;
    this.log = options.logger.child({ component: 'model-pool' });
  }

  /** Loads every allowed model now (so a worker is warm before it takes work). */
  async preload(): Promise<LoadedModel[]> {
    const names = this.options.allow ?? [];
    const settled = await Promise.allSettled(names.map((n) => this.get(n)));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    return settled.map((s) => (s as PromiseFulfilledResult<LoadedModel>).value);
  }

  /** The model for a job: `version`, or the newest served. An UnknownModelError (UNKNOWN_VERSION) for a version not served now. */
  async get(name: string, version?: string): Promise<LoadedModel> {
    if (this.options.allow !== undefined && !this.options.allow.includes(name)) {
      throw new UnknownModelError(`model "${printable(name)}" is not served by this worker (it serves ${this.options.allow.join(', ')})`, { model: name, version });
    }
    if (version !== undefined) checkVersion(name, version);
    const state = this.states.get(name) ?? (await this.firstScan(name));
    const v = version ?? state.served.at(-1);
    if (v === undefined) {
      await this.repo.resolve(name); // throws the reason no version is complete
      throw new UnknownModelError(`model "${name}" has no version served now`, { model: name, code: 'UNKNOWN_VERSION' });
    }
    if (!state.served.includes(v)) {
      // The repository says why when it can (no such folder, incomplete, not chosen by the policy).
      const reason = await this.repo.resolve(name, v).then(
        () => undefined,
        (err: unknown) => (err instanceof UnknownModelError ? err : undefined),
      );
      throw reason ?? new UnknownModelError(`model "${name}" version "${v}" is not served now; served versions: ${state.served.join(', ') || 'none'}`, { model: name, version: v, code: 'UNKNOWN_VERSION' });
    }
    return this.slot(name, v);
  }

  /** Versions of `name` new jobs may use now, ascending (undefined: not scanned yet). */
  served(name: string): readonly string[] | undefined {
    return this.states.get(name)?.served;
  }

  /** Every model loaded now. */
  async models(): Promise<LoadedModel[]> {
    const settled = await Promise.allSettled([...this.slots.values()].map((s) => s.loading));
    return settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  }

  /**
   * Looks at the repository again and acts on what changed, for every model used so far:
   * a new default is loaded beside the serving one before it takes jobs; versions the policy
   * no longer serves are retired. Refreshes run one at a time.
   */
  refresh(): Promise<void> {
    const run = this.refreshing.then(async () => {
      for (const name of this.states.keys()) {
        if (this.closed) return;
        await this.refreshModel(name).catch((err: unknown) => this.log.warn({ err, model: name }, 'could not look at the model repository; serving what was served'));
      }
      this.evict();
    });
    this.refreshing = run;
    return run;
  }

  async close(timeoutMs = 30_000): Promise<void> {
    this.closed = true;
    const slots = [...this.slots.values()];
    this.slots.clear();
    await Promise.allSettled([...slots.map((s) => this.unload(s, timeoutMs, 'worker stopping')), ...this.unloading]);
  }

  private firstScan(name: string): Promise<ModelState> {
    let p = this.firstScans.get(name);
    if (p === undefined) {
      // What is complete when a model is first used is taken as it is: nothing to compare with yet.
      p = this.repo.scan(name).then(({ complete, policy }) => {
        const state: ModelState = {
          served: applyPolicy(
            complete.map((c) => c.version),
            policy,
          ),
          accepted: new Set(complete.map((c) => c.version)),
          seen: new Map(complete.map((c) => [c.version, c.fingerprint])),
          failed: new Map(),
        };
        this.states.set(name, state);
        return state;
      });
      this.firstScans.set(name, p);
      p.catch(() => this.firstScans.delete(name));
    }
    return p;
  }

  private async refreshModel(name: string): Promise<void> {
    const state = this.states.get(name)!;
    const scan = await this.repo.scan(name).catch((err: unknown) => {
      if (err instanceof UnknownModelError) return { complete: [], policy: undefined };
      throw err;
    });
    const seen = new Map(scan.complete.map((c) => [c.version, c.fingerprint]));
    const accepted = new Set<string>();
    for (const c of scan.complete) {
      if (state.failed.get(c.version) === c.fingerprint) continue;
      if (state.accepted.has(c.version) || c.marker || state.seen.get(c.version) === c.fingerprint) accepted.add(c.version);
    }
    state.seen = seen;
    for (const [v, fp] of state.failed) if (seen.get(v) !== fp) state.failed.delete(v);
    const policy = scan.policy;
    const targetOf = (): string[] => (policy === undefined ? [] : applyPolicy([...accepted].sort(byNumber), policy));
    let target = targetOf();
    const current = state.served.at(-1);
    const inUse = current !== undefined && this.slots.has(key(name, current));
    // The new default is warm before the first job reaches it; a broken one leaves the old serving.
    for (let next = target.at(-1); inUse && next !== undefined && next !== current && !this.slots.has(key(name, next)); next = target.at(-1)) {
      try {
        await this.slot(name, next);
        this.options.metrics?.modelReload(name, 'loaded');
        this.log.info({ model: name, version: next, serving: current }, 'new model version loaded beside the serving one');
      } catch (err) {
        state.failed.set(next, seen.get(next)!);
        accepted.delete(next);
        target = targetOf();
        this.options.metrics?.modelReload(name, 'failed');
        this.log.error({ err, model: name, version: next, serving: current }, 'new model version failed to load; the serving version keeps serving');
      }
    }
    if (this.closed) return;
    const retired = state.served.filter((v) => !target.includes(v));
    state.served = target;
    state.accepted = accepted;
    for (const v of retired) {
      this.options.metrics?.modelReload(name, 'retired');
      this.log.info({ model: name, version: v, served: target }, 'model version no longer served: it takes no new jobs');
    }
    for (const slot of [...this.slots.values()]) {
      if (slot.name === name && !target.includes(slot.version)) {
        this.slots.delete(key(name, slot.version));
        this.retire(slot, 'retired');
      }
    }
  }

  /** The loaded (or loading) version, marked as just used. */
  private slot(name: string, version: string): Promise<LoadedModel> {
    const k = key(name, version);
    const existing = this.slots.get(k);
    if (existing !== undefined) {
      this.slots.delete(k);
      this.slots.set(k, existing);
      return existing.loading;
    }
    const loading = this.repo.describe(name, version).then((mv) => loadVersion(mv, this.options));
    const slot: Slot = { name, version, loading };
    this.slots.set(k, slot);
    loading.then(
      (model) => {
        slot.model = model;
        if (this.closed) this.retire(slot, 'loaded after the pool closed');
        if (this.slots.get(k) !== slot) return;
        this.evict();
      },
      // A failed load is retried by the next job (or, for a new version, once its folder changes).
      () => {
        if (this.slots.get(k) === slot) this.slots.delete(k);
      },
    );
    return loading;
  }

  /** Unloads least recently used idle versions while more than maxLoadedModels are loaded. */
  private evict(): void {
    const max = this.options.maxLoadedModels;
    if (max === undefined || this.closed) return;
    const loaded = [...this.slots.values()].filter((s) => s.model !== undefined);
    let excess = loaded.length - max;
    // The most recently used one stays: it was loaded for a job that is about to use it.
    for (const slot of loaded.slice(0, -1)) {
      if (excess <= 0) break;
      const b = slot.model!.batcher;
      if (b.inFlightRows > 0 || b.batchesInFlight > 0 || b.pendingRows > 0) continue;
      this.slots.delete(key(slot.name, slot.version));
      this.retire(slot, 'least recently used (--max-loaded-models)');
      excess--;
    }
    if (excess > 0) this.log.debug({ loaded: loaded.length, max }, 'more models loaded than --max-loaded-models: the others are busy; unloaded once idle');
  }

  /** Unloads a version that has left the pool, in the background (close() waits for it). */
  private retire(slot: Slot, why: string): void {
    const p = this.unload(slot, this.options.drainTimeoutMs ?? 30_000, why);
    this.unloading.add(p);
    void p.finally(() => this.unloading.delete(p));
  }

  /** Closes a version that has left the pool once every job that got it has submitted its rows. */
  private async unload(slot: Slot, timeoutMs: number, why: string): Promise<void> {
    const model = await slot.loading.catch(() => undefined);
    if (model === undefined) return;
    // A job that got this model before it left the pool submits in the same turn: let it.
    await nextTurn();
    const began = performance.now();
    try {
      await model.close(timeoutMs);
    } catch (err) {
      this.log.warn({ err, model: slot.name, version: slot.version }, 'model version did not close cleanly');
    }
    const seconds = (performance.now() - began) / 1000;
    this.options.metrics?.modelUnloaded(slot.name, slot.version, seconds);
    this.log.info({ model: slot.name, version: slot.version, why, unloadSeconds: seconds }, 'model version unloaded');
  }

}
