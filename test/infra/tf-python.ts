/**
 * TensorFlow in Python, for the TF.js tests: a Keras model built by Keras itself, converted by
 * `tensorflowjs_converter`, with Keras's own predictions as the expected values.
 *
 *   ensureTfPython()  ─► <cache>/venv-tf/bin/python     (~3 GB, separate from the light <cache>/venv)
 *   kerasFixtures()   ─► <cache>/tfjs-fixtures/<key>/   saved_model/  graph/  layers/  expected.json
 *
 * Both are built once and reused: a marker file written last says a build is complete (a
 * killed build is redone, not trusted), under a lock directory so that several test files or
 * processes asking at once build it only once.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { onceUnderLock, readText } from './lock.js';
import { cacheDir } from './python.js';

/**
 * `pip install tensorflow-cpu tensorflowjs` does not resolve (tensorflowjs pulls tf-keras and
 * decision forests, which want the `tensorflow` package itself, and pip backtracks through
 * many 0.5 GB wheels): these pins install in a few minutes. Changing the list rebuilds the venv.
 */
export const TF_PACKAGES: readonly string[] = [
  'tensorflow==2.18.0',
  'tf-keras==2.18.0',
  'protobuf<6',
  // The converter imports these at module load, though a Keras model needs none of them.
  'tensorflow-decision-forests==1.11.0',
  'ydf==0.9.0',
  'tensorflow-hub==0.16.1',
  'jax==0.4.34',
  'jaxlib==0.4.34',
];
/** Installed without its dependencies (it would pull flax and more the converter never imports). */
export const TFJS_PACKAGE = 'tensorflowjs==4.22.0';

/** How long to wait for another process building the same thing. */
const LOCK_WAIT_MS = 20 * 60_000;

/** Python that builds the Keras model, converts it and records Keras's predictions (argv[1]: the output folder). */
const BUILD_FIXTURES = String.raw`
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
import tf_keras as keras
import tensorflow as tf
from tensorflowjs.converters import converter

out = sys.argv[1]
keras.utils.set_random_seed(7)
features = keras.Input(shape=(8,), name="features")
context = keras.Input(shape=(3,), name="context")
h = keras.layers.Concatenate()([features, context])
# Non-zero biases: the converter folds zero ones away, and they must be tested too.
bias = lambda: keras.initializers.RandomNormal(stddev=0.1)
h = keras.layers.Dense(16, activation="relu", bias_initializer=bias())(h)
h = keras.layers.Dense(8, activation="elu", bias_initializer=bias())(h)
score = keras.layers.Dense(1, activation="sigmoid", bias_initializer=bias(), name="score")(h)
embedding = keras.layers.Dense(4, bias_initializer=bias(), name="embedding")(h)
model = keras.Model(inputs=[features, context], outputs=[score, embedding])

rng = np.random.default_rng(11)
x = {"features": rng.normal(size=(37, 8)).astype(np.float32), "context": rng.normal(size=(37, 3)).astype(np.float32)}
y = model.predict(x, verbose=0)

saved = os.path.join(out, "saved_model")
model.save(saved, save_format="tf")
converter.convert(["--input_format=keras_saved_model", "--output_format=tfjs_layers_model", saved, os.path.join(out, "layers")])
converter.convert(["--input_format=tf_saved_model", "--output_format=tfjs_graph_model", saved, os.path.join(out, "graph")])

def rows(a):
    return [float(v) for v in np.asarray(a, dtype=np.float32).reshape(-1)]
expected = {
    "rows": 37,
    "inputs": {k: {"shape": list(v.shape), "data": rows(v)} for k, v in x.items()},
    "outputs": {"score": {"shape": list(y[0].shape), "data": rows(y[0])}, "embedding": {"shape": list(y[1].shape), "data": rows(y[1])}},
}
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f)
`;

export interface ExpectedTensor {
  readonly shape: number[];
  readonly data: number[];
}

export interface KerasFixtures {
  /** A Keras SavedModel folder (holds saved_model.pb). */
  readonly savedModel: string;
  /** `tensorflowjs_converter --output_format=tfjs_graph_model` of it (model.json + shards). */
  readonly graph: string;
  /** `tensorflowjs_converter --output_format=tfjs_layers_model` of it. */
  readonly layers: string;
  /** Rows fed to Keras and what Keras predicted (float32 values). */
  readonly expected: { rows: number; inputs: Record<string, ExpectedTensor>; outputs: Record<string, ExpectedTensor> };
}

function venvPython(venvDir: string): string {
  return process.platform === 'win32' ? join(venvDir, 'Scripts', 'python.exe') : join(venvDir, 'bin', 'python');
}

let pendingPython: Promise<string> | undefined;
let pendingFixtures: Promise<KerasFixtures> | undefined;

/** A python in `<cache>/venv-tf` with {@link TF_PACKAGES} and {@link TFJS_PACKAGE}; built on first use (needs python3 and PyPI). */
export function ensureTfPython(): Promise<string> {
  pendingPython ??= buildVenv().catch((err: unknown) => {
    pendingPython = undefined;
    throw err;
  });
  return pendingPython;
}

/** The Keras model, its conversions and Keras's predictions, built once into the cache. */
export function kerasFixtures(): Promise<KerasFixtures> {
  pendingFixtures ??= buildFixtures().catch((err: unknown) => {
    pendingFixtures = undefined;
    throw err;
  });
  return pendingFixtures;
}

async function buildVenv(): Promise<string> {
  const root = cacheDir();
  const venvDir = join(root, 'venv-tf');
  const marker = join(venvDir, '.inferq-ready');
  const wanted = [...TF_PACKAGES, TFJS_PACKAGE].sort().join('\n');
  const python = venvPython(venvDir);
  await mkdir(root, { recursive: true });
  await onceUnderLock(join(root, 'venv-tf.lock'), { done: async () => (await readText(marker)) === wanted, waitMs: LOCK_WAIT_MS }, async () => {
    await rm(venvDir, { recursive: true, force: true }); // half-built or stale package list
    await run(process.env['INFERQ_PYTHON'] ?? 'python3', ['-m', 'venv', venvDir]);
    const pip = [python, '-m', 'pip', 'install', '--disable-pip-version-check', '--quiet'] as const;
    await run(pip[0], [...pip.slice(1), ...TF_PACKAGES]);
    await run(pip[0], [...pip.slice(1), '--no-deps', TFJS_PACKAGE]);
    await writeFile(marker, wanted);
  });
  return python;
}

async function buildFixtures(): Promise<KerasFixtures> {
  const python = await ensureTfPython();
  const key = createHash('sha256').update(BUILD_FIXTURES).update(TFJS_PACKAGE).update(TF_PACKAGES.join('\n')).digest('hex').slice(0, 16);
  const dir = join(cacheDir(), 'tfjs-fixtures', key);
  const marker = join(dir, '.inferq-ready');
  await mkdir(join(cacheDir(), 'tfjs-fixtures'), { recursive: true });
  await onceUnderLock(`${dir}.lock`, { done: async () => (await readText(marker)) !== undefined, waitMs: LOCK_WAIT_MS }, async () => {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir);
    await run(python, ['-c', BUILD_FIXTURES, dir]);
    await writeFile(marker, key);
  });
  return {
    savedModel: join(dir, 'saved_model'),
    graph: join(dir, 'graph'),
    layers: join(dir, 'layers'),
    expected: JSON.parse(await readFile(join(dir, 'expected.json'), 'utf8')) as KerasFixtures['expected'],
  };
}

function run(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', (e) => reject(new Error(`${command}: ${e.message}`, { cause: e })));
    child.on('close', (code, signal) => {
      if (code === 0) {
        resolve(Buffer.concat(out).toString('utf8'));
        return;
      }
      const stderr = Buffer.concat(err).toString('utf8').trim().split('\n').slice(-30).join('\n');
      const what = args[0] === '-c' ? `${command} -c <code>` : `${command} ${args.join(' ')}`;
      reject(new Error(`${what} exited with ${signal ?? `code ${String(code)}`}${stderr === '' ? '' : `:\n${stderr}`}`));
    });
  });
}
