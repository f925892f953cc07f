/**
 * The deployment files (deploy/), checked without a cluster or a Docker engine:
 *  - hadolint on both Dockerfiles; what they COPY is in the repository and in .dockerignore's list;
 *  - every kustomization rendered (`kubectl kustomize`) and each object validated: core kinds
 *    against the Kubernetes JSON schemas, KEDA and prometheus-operator kinds against their
 *    vendored CRDs (test/fixtures/schemas);
 *  - consistency: grace periods above the shutdown deadline, probes on the HTTP port, flags the
 *    CLI knows, KEDA triggers on the workers' own keys, group and topic, no credentials in args;
 *  - the Grafana dashboard queries only metrics a worker exports.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { workerMetricNames } from '@inferq/workers';
import { REPO_ROOT, runCli } from './helpers/cli.js';
import { deployTool, runDeployPython } from './infra/python.js';

const run = promisify(execFile);
const at = (...p: string[]): string => join(REPO_ROOT, ...p);

/** Each kustomization a user applies (or that others include), rendered and checked. */
const KUSTOMIZATIONS = ['base', 'redis', 'kafka', 'precompute', 'precompute-indexed', 'overlays/redis-gpu', 'overlays/kafka-gpu'];
/** Kubernetes versions whose schemas every core object must pass. */
const K8S_VERSIONS = ['1.30.0', '1.33.0'];
const CRDS = ['keda.sh_scaledobjects.yaml', 'keda.sh_triggerauthentications.yaml', 'monitoring.coreos.com_podmonitors.yaml'];
/** The worker's own stop backstop: it exits at --shutdown-timeout-ms plus this (workers/src/cli/serve.ts). */
const BACKSTOP_MS = 3000;
/** The worker's --kafka-sasl-mechanism (KAFKA_SASL_MECHANISM) in KEDA's kafka scaler's words. */
const KEDA_SASL: Record<string, string> = { none: 'none', plain: 'plaintext', 'scram-sha-256': 'scram_sha256', 'scram-sha-512': 'scram_sha512' };
/** prom-client default metrics the dashboard may query (each checked below to be one prom-client registers). */
const PROCESS_METRICS = ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds'];

type Obj = Record<string, unknown> & { kind: string; apiVersion: string; metadata: { name: string; labels?: Record<string, string> } };
interface Container { name: string; image: string; args?: string[]; env?: { name: string; value?: string; valueFrom?: unknown }[]; envFrom?: { configMapRef?: { name: string } }[]; ports?: { name?: string; containerPort: number }[]; resources?: { limits?: Record<string, string> }; [probe: string]: unknown }
interface PodSpec { containers: Container[]; terminationGracePeriodSeconds?: number }

const renders = new Map<string, Obj[]>();
let workerFlags: Set<string>;
let precomputeFlags: Set<string>;

async function kustomize(dir: string): Promise<Obj[]> {
  const { stdout } = await run('kubectl', ['kustomize', at('deploy', 'k8s', dir)], { maxBuffer: 64 << 20 }).catch((err: unknown) => {
    throw new Error(`kubectl kustomize deploy/k8s/${dir} failed (kubectl comes with the machine image; kustomize v5 works too): ${(err as Error).message}`, { cause: err });
  });
  return parseAllDocuments(stdout).map((d) => d.toJS() as Obj).filter((o) => o !== null);
}

/** The long flags a command's --help lists. */
async function flagsOf(args: string[]): Promise<Set<string>> {
  const r = await runCli([...args, '--help']);
  expect(r.code, r.stderr).toBe(0);
  return new Set([...r.stdout.matchAll(/(?:^|\s)(--[a-z][a-z0-9-]*)/g)].map((m) => m[1] as string));
}

const podSpec = (o: Obj): PodSpec | undefined => {
  const spec = o['spec'] as { template?: { spec?: PodSpec }; jobTemplate?: { spec?: { template?: { spec?: PodSpec } } } } | undefined;
  if (o.kind === 'Deployment' || o.kind === 'Job') return spec?.template?.spec;
  if (o.kind === 'CronJob') return spec?.jobTemplate?.spec?.template?.spec;
  return undefined;
};
const flag = (args: readonly string[], name: string): string | undefined => {
  const hit = args.find((a) => a === name || a.startsWith(`${name}=`));
  return hit === undefined ? undefined : hit === name ? 'true' : hit.slice(name.length + 1);
};
/** A container's environment variable: its own `env` value, else from a ConfigMap it imports. */
function envOf(c: Container, objs: readonly Obj[], name: string): string | undefined {
  const own = c.env?.find((e) => e.name === name);
  if (own !== undefined) return own.value;
  for (const from of c.envFrom ?? []) {
    const cm = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === from.configMapRef?.name);
    const v = (cm?.['data'] as Record<string, string> | undefined)?.[name];
    if (v !== undefined) return v;
  }
  return undefined;
}
const workerDeployments = (objs: readonly Obj[]): { d: Obj; c: Container; pod: PodSpec }[] =>
  objs.flatMap((d) => {
    const pod = podSpec(d);
    const c = pod?.containers[0];
    return d.kind === 'Deployment' && pod !== undefined && c?.args?.[0] === 'worker' ? [{ d, c, pod }] : [];
  });
const all = (): { source: string; o: Obj }[] => [...renders].flatMap(([source, objs]) => objs.map((o) => ({ source, o })));

beforeAll(async () => {
  for (const dir of KUSTOMIZATIONS) renders.set(dir, await kustomize(dir));
  [workerFlags, precomputeFlags] = await Promise.all([flagsOf(['worker']), flagsOf(['precompute'])]);
}, 600_000);

describe('images', () => {
  async function hadolint(file: string, input?: string): Promise<{ code: number; out: string }> {
    const bin = await deployTool('hadolint');
    return new Promise((resolve, reject) => {
      const child = execFile(bin, ['--no-color', file], (err, stdout, stderr) => {
        if (err !== null && typeof err.code !== 'number') reject(err);
        else resolve({ code: err === null ? 0 : (err.code as number), out: `${stdout}${stderr}` });
      });
      child.stdin?.end(input ?? '');
    });
  }

  it('hadolint passes both Dockerfiles, and fails a bad one', async () => {
    for (const file of ['deploy/Dockerfile', 'deploy/Dockerfile.cuda']) {
      const r = await hadolint(at(file));
      expect(r, file).toEqual({ code: 0, out: '' });
    }
    const bad = await hadolint('-', 'FROM node\nRUN apt-get update && apt-get install -y curl\n');
    expect(bad.code).not.toBe(0);
    expect(bad.out).toMatch(/DL3006/); // untagged image
    expect(bad.out).toMatch(/DL3008/); // unpinned apt package
  }, 600_000);

  it('runs the built dist/ with production dependencies as a non-root user under tini, and its build context holds what it copies', () => {
    const ignore = readFileSync(at('.dockerignore'), 'utf8').split('\n');
    const included = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
    expect(ignore).toContain('*'); // a whitelist: nothing else is sent to the builder
    for (const file of ['deploy/Dockerfile', 'deploy/Dockerfile.cuda']) {
      const text = readFileSync(at(file), 'utf8');
      const stages = text.split(/^FROM /m).slice(1);
      const runtime = stages.at(-1) ?? '';
      expect(text, file).toMatch(/npm ci --omit=dev/);
      for (const ws of ['shared', 'producer', 'workers']) expect(runtime, file).toContain(`COPY --from=build /src/${ws}/dist ${ws}/dist`);
      expect(runtime, file).toMatch(/^USER 10001:10001$/m);
      expect(runtime, file).toMatch(/^ENTRYPOINT \["\/usr\/bin\/tini", "--", "inferq"\]$/m);
      expect(runtime, file).not.toMatch(/npm (ci|install)|tsx/);
      for (const m of text.matchAll(/^COPY (?!--from)(.+)$/gm)) {
        const sources = (m[1] as string).trim().split(/\s+/).slice(0, -1);
        for (const src of sources) {
          expect(existsSync(at(src)), `${file}: COPY ${src}`).toBe(true);
          expect(included.some((inc) => src === inc || src.startsWith(`${inc}/`)), `${file}: COPY ${src} is not in .dockerignore's list`).toBe(true);
        }
      }
    }
    const cuda = readFileSync(at('deploy/Dockerfile.cuda'), 'utf8');
    expect(cuda).toMatch(/^FROM nvidia\/cuda:12\.[0-9.]+-cudnn-runtime-/m);
    expect(cuda).toMatch(/ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules\/onnxruntime-node\/script\/install\.js/);
  });

  it('docker-compose runs the workers from the image with known flags and a stop grace above the drain', () => {
    const compose = parseYaml(readFileSync(at('docker-compose.yml'), 'utf8')) as { services: Record<string, { build?: { dockerfile?: string }; command?: unknown; stop_grace_period?: string }> };
    const workers = Object.entries(compose.services).filter(([, s]) => Array.isArray(s.command) && s.command[0] === 'worker');
    expect(workers.map(([n]) => n).sort()).toEqual(['kafka-worker', 'worker']);
    for (const [name, s] of Object.entries(compose.services)) expect(JSON.stringify(s.command ?? ''), name).not.toMatch(/npm (ci|install)/);
    for (const [name, s] of workers) {
      const args = s.command as string[];
      expect(s.build?.dockerfile, name).toBe('deploy/Dockerfile');
      for (const a of args.slice(1)) expect(workerFlags, `${name}: ${a}`).toContain(a.split('=')[0]);
      const shutdownMs = Number(flag(args, '--shutdown-timeout-ms') ?? 30_000);
      expect(Number.parseInt(s.stop_grace_period ?? '10', 10) * 1000, name).toBeGreaterThan(shutdownMs + BACKSTOP_MS);
    }
  });
});

describe('Kubernetes manifests', () => {
  it('every rendered object is valid for its schema: Kubernetes, KEDA, prometheus-operator', async () => {
    const objects = all().map(({ source, o }) => ({ source, object: o }));
    const crds = CRDS.map((f) => readFileSync(at('test/fixtures/schemas', f), 'utf8'));
    const report = JSON.parse(await runDeployPython(at('test/fixtures/schemas/validate_manifests.py'), JSON.stringify({ versions: K8S_VERSIONS, crds, objects }))) as { source: string; kind: string; name: string; checkedAgainst: string; errors: string[] }[];
    expect(report).toHaveLength(objects.length);
    expect(report.filter((r) => r.errors.length > 0)).toEqual([]);
    const checked = new Set(report.map((r) => `${r.kind} ← ${r.checkedAgainst}`));
    for (const kind of ['ScaledObject', 'TriggerAuthentication']) expect(checked).toContain(`${kind} ← CRD keda.sh/v1alpha1 ${kind}`);
    expect(checked).toContain('PodMonitor ← CRD monitoring.coreos.com/v1 PodMonitor');
    for (const kind of ['Deployment', 'PodDisruptionBudget', 'CronJob', 'Job', 'ConfigMap', 'PersistentVolumeClaim']) expect(checked).toContain(`${kind} ← Kubernetes ${K8S_VERSIONS.join(', ')}`);

    // The checker itself: a misspelt field and a wrong type are found in each kind of schema.
    const so = structuredClone(objects.find((x) => x.object.kind === 'ScaledObject')) as { source: string; object: Obj & { spec: Record<string, unknown> } };
    so.object.spec['maxReplicas'] = 3;
    const dep = structuredClone(objects.find((x) => x.object.kind === 'Deployment')) as { source: string; object: Obj };
    (podSpec(dep.object) as PodSpec).terminationGracePeriodSeconds = 'long' as unknown as number;
    const broken = JSON.parse(await runDeployPython(at('test/fixtures/schemas/validate_manifests.py'), JSON.stringify({ versions: K8S_VERSIONS, crds, objects: [so, dep] }))) as { errors: string[] }[];
    expect(broken[0]?.errors.join('\n')).toMatch(/maxReplicas/);
    expect(broken[1]?.errors.join('\n')).toMatch(/terminationGracePeriodSeconds/);
  }, 600_000);

  it('worker Deployments: grace above the shutdown deadline, probes and the PodMonitor on the HTTP port, flags the CLI knows; precompute CronJobs and the Indexed Job: flags the CLI knows', () => {
    let seen = 0;
    let indexedJobs = 0;
    for (const [source, objs] of renders) {
      const podMonitor = objs.find((o) => o.kind === 'PodMonitor') as { spec: { selector: { matchLabels: Record<string, string> }; podMetricsEndpoints: { port: string }[] } } | undefined;
      for (const { d, c, pod } of workerDeployments(objs)) {
        const where = `${source}: ${d.metadata.name}`;
        seen += 1;
        const args = c.args ?? [];
        for (const a of args.slice(1)) expect(workerFlags, `${where}: ${a}`).toContain(a.split('=')[0]);
        const shutdownMs = Number(flag(args, '--shutdown-timeout-ms') ?? 30_000);
        expect((pod.terminationGracePeriodSeconds ?? 30) * 1000, where).toBeGreaterThan(shutdownMs + BACKSTOP_MS);

        const httpPort = Number(flag(args, '--http-port') ?? envOf(c, objs, 'INFERQ_HTTP_PORT') ?? 9464);
        expect(httpPort, where).toBeGreaterThan(0);
        const portOf = (p: unknown): number | undefined => (typeof p === 'number' ? p : c.ports?.find((x) => x.name === p)?.containerPort);
        for (const [probe, path] of [['startupProbe', '/livez'], ['livenessProbe', '/livez'], ['readinessProbe', '/readyz']] as const) {
          const get = (c[probe] as { httpGet?: { path: string; port: unknown } } | undefined)?.httpGet;
          expect(get?.path, `${where} ${probe}`).toBe(path);
          expect(portOf(get?.port), `${where} ${probe}`).toBe(httpPort);
        }
        const labels = (d['spec'] as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels;
        expect(podMonitor, source).toBeDefined();
        expect(Object.entries(podMonitor?.spec.selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v), `${where}: the PodMonitor selects it`).toBe(true);
        for (const ep of podMonitor?.spec.podMetricsEndpoints ?? []) expect(portOf(ep.port), `${where}: PodMonitor port`).toBe(httpPort);
      }
      for (const o of objs.filter((x) => x.kind === 'CronJob' || x.kind === 'Job')) {
        const where = `${source}: ${o.kind} ${o.metadata.name}`;
        const c = podSpec(o)?.containers[0];
        expect(c?.args?.[0], where).toBe('precompute');
        for (const a of (c?.args ?? []).slice(1)) expect(precomputeFlags, `${where}: ${a}`).toContain(a.split('=')[0]);
        if (o.kind !== 'Job') continue;
        indexedJobs += 1;
        // An Indexed Job's pod i runs shard i of N: N must be the Job's completions.
        const spec = o['spec'] as { completionMode?: string; completions?: number };
        expect(spec.completionMode, where).toBe('Indexed');
        expect(flag(c?.args ?? [], '--shard'), where).toBe(`$(SHARD)/${spec.completions}`);
        expect(c?.env?.find((e) => e.name === 'SHARD')?.valueFrom, where).toEqual({ fieldRef: { fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']" } });
      }
    }
    expect(seen).toBeGreaterThanOrEqual(5); // Redis, Kafka (each CPU and GPU), the scheduler
    expect(indexedJobs).toBe(1); // deploy/k8s/precompute-indexed
  });

  it('KEDA: Redis triggers watch the queue\'s BullMQ keys; Kafka\'s the workers\' group and topic, at most one replica per partition', () => {
    const kinds = new Set<string>();
    for (const [source, objs] of renders) {
      for (const so of objs.filter((o) => o.kind === 'ScaledObject')) {
        const spec = so['spec'] as { scaleTargetRef: { name: string }; maxReplicaCount: number; triggers: { type: string; metadata: Record<string, string>; authenticationRef?: { name: string } }[] };
        const target = workerDeployments(objs).find(({ d }) => d.metadata.name === spec.scaleTargetRef.name);
        expect(target, `${source}: ${so.metadata.name} targets ${spec.scaleTargetRef.name}`).toBeDefined();
        const c = target?.c as Container;
        const args = c.args ?? [];
        for (const t of spec.triggers) {
          if (t.authenticationRef !== undefined) expect(objs.some((o) => o.kind === 'TriggerAuthentication' && o.metadata.name === t.authenticationRef?.name), `${source}: ${t.authenticationRef.name}`).toBe(true);
        }
        const transport = flag(args, '--transport') ?? 'redis';
        kinds.add(transport);
        if (transport === 'redis') {
          const prefix = flag(args, '--prefix') ?? 'inferq';
          const queue = flag(args, '--queue') ?? 'inferq';
          expect(spec.triggers.map((t) => t.type)).toEqual(['redis', 'redis']);
          expect(spec.triggers.map((t) => t.metadata['listName']).sort()).toEqual([`${prefix}:${queue}:prioritized`, `${prefix}:${queue}:wait`]);
          const url = new URL(flag(args, '--redis') ?? envOf(c, objs, 'REDIS_URL') ?? 'redis://127.0.0.1:6379');
          for (const t of spec.triggers) expect(t.metadata['address'], source).toBe(`${url.hostname}:${url.port || '6379'}`);
        } else {
          expect(spec.triggers.map((t) => t.type)).toEqual(['kafka']);
          const m = spec.triggers[0]?.metadata ?? {};
          expect(m['topic'], source).toBe(flag(args, '--topic') ?? 'inferq');
          expect(m['consumerGroup'], source).toBe(flag(args, '--group') ?? 'inferq-workers');
          expect(m['bootstrapServers'], source).toBe(flag(args, '--brokers'));
          const partitions = Number(flag(args, '--partitions'));
          expect(Number.isInteger(partitions), `${source}: the topic's partitions are declared (--partitions)`).toBe(true);
          expect(spec.maxReplicaCount, source).toBeLessThanOrEqual(partitions);
          expect(m['allowIdleConsumers'] ?? 'false').toBe('false');
          expect(m['sasl'], source).toBe(KEDA_SASL[envOf(c, objs, 'KAFKA_SASL_MECHANISM') ?? 'none']);
          expect(m['tls'], source).toBe(envOf(c, objs, 'KAFKA_CA_FILE') !== undefined ? 'enable' : 'disable');
        }
      }
    }
    expect([...kinds].sort()).toEqual(['kafka', 'redis']);
  });

  it('GPU overlays give every queue worker one GPU, the CUDA image and --device=cuda:0; the CPU ones none', () => {
    for (const [source, objs] of renders) {
      const gpu = source.endsWith('-gpu');
      for (const { d, c } of workerDeployments(objs)) {
        const queueWorker = d.metadata.labels?.['app.kubernetes.io/component'] === 'worker';
        const args = c.args ?? [];
        const where = `${source}: ${d.metadata.name}`;
        if (gpu && queueWorker) {
          expect(c.resources?.limits?.['nvidia.com/gpu'], where).toBe('1');
          expect(args.filter((a) => a.startsWith('--device')), where).toEqual(['--device=cuda:0']);
          expect(c.image, where).toMatch(/-cuda12$/);
        } else {
          expect(c.resources?.limits?.['nvidia.com/gpu'], where).toBeUndefined();
          expect(args.some((a) => a.startsWith('--device')), where).toBe(false);
        }
      }
    }
  });

  it('no credentials in args, plain env values or ConfigMaps; secret variables come from Secrets', () => {
    const credential = /:\/\/[^/@\s]*:[^/@\s]+@|(password|passwd|secret|token)(?!-file)[^=]*=/i;
    for (const { source, o } of all()) {
      const where = `${source}: ${o.kind} ${o.metadata.name}`;
      expect(o.kind, where).not.toBe('Secret');
      for (const v of Object.values((o['data'] as Record<string, string> | undefined) ?? {})) expect(v, where).not.toMatch(credential);
      for (const c of podSpec(o)?.containers ?? []) {
        for (const a of c.args ?? []) expect(a, where).not.toMatch(credential);
        for (const e of c.env ?? []) {
          if (/PASSWORD|TOKEN|SECRET/.test(e.name) && !e.name.endsWith('_FILE')) expect(e.valueFrom, `${where}: ${e.name}`).toHaveProperty('secretKeyRef');
          if (e.value !== undefined) expect(e.value, `${where}: ${e.name}`).not.toMatch(credential);
        }
      }
    }
    expect('--redis=redis://:hunter2@redis:6379').toMatch(credential); // the pattern finds what it is for
    expect('--kafka-sasl-password-file=/run/secrets/p').not.toMatch(credential);
  });
});

describe('Grafana dashboard', () => {
  const FUNCTIONS = new Set(['sum', 'max', 'min', 'avg', 'count', 'rate', 'irate', 'increase', 'histogram_quantile', 'clamp_min', 'clamp_max', 'vector', 'scalar', 'topk', 'bottomk', 'abs', 'delta', 'deriv', 'max_over_time', 'min_over_time', 'avg_over_time', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'label_values', 'inf', 'nan']);

  /** The metric names a PromQL expression (or Grafana variable query) reads. */
  function metricsIn(expr: string): string[] {
    const bare = expr
      .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
      .replace(/\{[^}]*\}/g, ' ')
      .replace(/\[[^\]]*\]/g, ' ')
      .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
      .replace(/\$\{?\w+\}?/g, ' ')
      .replace(/label_values\(\s*([^,()]*?)\s*,\s*\w+\s*\)/g, '$1'); // label_values(metric, label): the label is no metric
    return [...bare.matchAll(/(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*/g)].map((m) => m[0]).filter((w) => !FUNCTIONS.has(w.toLowerCase()));
  }

  it('is a dashboard whose every query reads metrics a worker exports, covering each area', async () => {
    const dash = JSON.parse(readFileSync(at('deploy/grafana/inferq.json'), 'utf8')) as { uid: string; panels: { id: number; type: string; targets?: { expr: string }[] }[]; templating: { list: { query?: unknown; definition?: string }[] } };
    expect(dash.uid).toBe('inferq-workers');
    const ids = dash.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const exprs = dash.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr);
    exprs.push(...dash.templating.list.flatMap((v) => (typeof v.definition === 'string' ? [v.definition] : [])));
    expect(dash.panels.filter((p) => p.type !== 'row').every((p) => (p.targets ?? []).length > 0)).toBe(true);

    const exported = new Set(workerMetricNames());
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    const defaults = new Set((await registry.getMetricsAsJSON()).map((m) => m.name));
    for (const m of PROCESS_METRICS) expect(defaults, `prom-client registers ${m}`).toContain(m);
    const known = (name: string): boolean => exported.has(name) || PROCESS_METRICS.includes(name) || exported.has(name.replace(/_(bucket|sum|count)$/, ''));

    const used = new Set(exprs.flatMap(metricsIn));
    expect([...used].filter((n) => !known(n))).toEqual([]);
    for (const m of ['inferq_jobs_total', 'inferq_rows_total', 'inferq_job_duration_seconds_bucket', 'inferq_queue_wait_seconds_bucket', 'inferq_batch_rows_bucket', 'inferq_inference_duration_seconds_bucket', 'inferq_queue_jobs', 'inferq_kafka_consumer_lag', 'inferq_dead_letters_total', 'inferq_ready', 'process_resident_memory_bytes']) {
      expect(used, m).toContain(m);
    }
    // The extractor finds a misspelt metric, and only metrics.
    expect(metricsIn('sum by (le) (rate(inferq_jobz_total{code="E_x"}[$__rate_interval])) / 1e-9')).toEqual(['inferq_jobz_total']);
    expect(known('inferq_jobz_total')).toBe(false);
  });
});
