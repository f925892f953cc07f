/** Test helpers: small ONNX models written into temporary model repositories. */
import { mkdtemp, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import type { Logger } from 'pino';
import { buildMlp, randomMlp } from '../../examples/build/onnx-builder.js';
import type { MlpSpec } from '../../examples/build/onnx-builder.js';

export async function tempDir(prefix = 'inferq-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** Writes `<repo>/<name>/<version>/model.onnx` (and config.yaml when given). */
export async function writeModel(repo: string, name: string, version: string, spec: MlpSpec | Uint8Array, configYaml?: string): Promise<string> {
  const dir = join(repo, name, version);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'model.onnx'), spec instanceof Uint8Array ? spec : buildMlp(spec));
  if (configYaml !== undefined) await writeFile(join(dir, 'config.yaml'), configYaml);
  return dir;
}

/** A small deterministic MLP: features [n,dims[0]] → score [n,1]. */
export function smallMlp(dims: number[] = [4, 8, 1], seed = 1): MlpSpec {
  return randomMlp(dims, seed);
}

/** A logger whose lines are collected (parsed JSON) for assertions. */
export function captureLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}
