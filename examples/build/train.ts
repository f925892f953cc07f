/**
 * A tiny deterministic MLP trainer: ReLU hidden layers, sigmoid outputs, binary
 * cross-entropy summed over the outputs (multi-label), mini-batch AdamW. Plain
 * Float32Array loops; the same data, options and seed give the same weights.
 */
import type { MlpLayer } from './onnx-builder.js';
import { createRng } from './rng.js';

export interface TrainData {
  /** Rows × inDim, row-major. */
  x: Float32Array;
  /** Rows × outDim targets in [0, 1], row-major. */
  y: Float32Array;
  rows: number;
  inDim: number;
  outDim: number;
}

export interface TrainOptions {
  /** Hidden layer widths, e.g. [64]. */
  hidden: number[];
  epochs: number;
  seed: number;
  /** Default 64. */
  batchSize?: number;
  /** Adam step size; default 0.003. */
  learningRate?: number;
  /** Decoupled (AdamW) weight decay on weights, not biases; default 0. */
  weightDecay?: number;
  /** Called after each epoch with the mean training loss per row. */
  onEpoch?: (epoch: number, loss: number) => void;
}

interface Param {
  value: Float32Array;
  grad: Float32Array;
  m: Float32Array;
  v: Float32Array;
  decay: boolean;
}

const param = (value: Float32Array, decay: boolean): Param => ({
  value,
  grad: new Float32Array(value.length),
  m: new Float32Array(value.length),
  v: new Float32Array(value.length),
  decay,
});

/** Trains an MLP (ReLU hidden layers, sigmoid output layer) and returns its layers. */
export function trainMlp(data: TrainData, opts: TrainOptions): MlpLayer[] {
  const { rows, inDim, outDim } = data;
  if (data.x.length !== rows * inDim || data.y.length !== rows * outDim) {
    throw new Error(`train: expected x ${rows}x${inDim} and y ${rows}x${outDim}, got ${data.x.length} and ${data.y.length} values`);
  }
  const batchSize = opts.batchSize ?? 64;
  const lr = opts.learningRate ?? 0.003;
  const wd = opts.weightDecay ?? 0;
  const [beta1, beta2, eps] = [0.9, 0.999, 1e-8];
  const rng = createRng(opts.seed);
  const dims = [inDim, ...opts.hidden, outDim];
  const nLayers = dims.length - 1;
  const width = (l: number): number => dims[l] as number;

  const weights: Param[] = [];
  const biases: Param[] = [];
  for (let l = 0; l < nLayers; l++) {
    const std = l === nLayers - 1 ? Math.sqrt(2 / (width(l) + width(l + 1))) : Math.sqrt(2 / width(l));
    weights.push(param(Float32Array.from({ length: width(l) * width(l + 1) }, () => rng.normal() * std), true));
    biases.push(param(new Float32Array(width(l + 1)), false));
  }
  // acts[l]: the input of layer l (acts[0] = the x batch, acts[nLayers] = the sigmoid output);
  // deltas[l]: d loss / d pre-activation for the values in acts[l].
  const acts = dims.map((d) => new Float32Array(batchSize * d));
  const deltas = dims.map((d) => new Float32Array(batchSize * d));
  const order = Array.from({ length: rows }, (_, i) => i);
  let step = 0;

  for (let epoch = 0; epoch < opts.epochs; epoch++) {
    rng.shuffle(order);
    let lossSum = 0;
    for (let start = 0; start < rows; start += batchSize) {
      const b = Math.min(batchSize, rows - start);
      const x0 = acts[0] as Float32Array;
      for (let r = 0; r < b; r++) x0.set(data.x.subarray((order[start + r] as number) * inDim, ((order[start + r] as number) + 1) * inDim), r * inDim);

      // Forward.
      for (let l = 0; l < nLayers; l++) {
        const [n, m] = [width(l), width(l + 1)];
        const a = acts[l] as Float32Array;
        const z = acts[l + 1] as Float32Array;
        const w = (weights[l] as Param).value;
        const bias = (biases[l] as Param).value;
        const last = l === nLayers - 1;
        for (let r = 0; r < b; r++) {
          const zo = r * m;
          z.set(bias, zo);
          for (let i = 0; i < n; i++) {
            const ai = a[r * n + i] as number;
            if (ai === 0) continue;
            const wo = i * m;
            for (let o = 0; o < m; o++) z[zo + o] = (z[zo + o] as number) + ai * (w[wo + o] as number);
          }
          for (let o = 0; o < m; o++) {
            const v = z[zo + o] as number;
            z[zo + o] = last ? 1 / (1 + Math.exp(-v)) : v > 0 ? v : 0;
          }
        }
      }

      // Output delta for sigmoid + BCE: (p - y) / b; accumulate the loss.
      const p = acts[nLayers] as Float32Array;
      const dOut = deltas[nLayers] as Float32Array;
      for (let r = 0; r < b; r++) {
        const yo = (order[start + r] as number) * outDim;
        for (let o = 0; o < outDim; o++) {
          const pv = Math.min(Math.max(p[r * outDim + o] as number, 1e-7), 1 - 1e-7);
          const yv = data.y[yo + o] as number;
          lossSum -= yv * Math.log(pv) + (1 - yv) * Math.log(1 - pv);
          dOut[r * outDim + o] = ((p[r * outDim + o] as number) - yv) / b;
        }
      }

      // Backward.
      for (let l = nLayers - 1; l >= 0; l--) {
        const [n, m] = [width(l), width(l + 1)];
        const a = acts[l] as Float32Array;
        const d = deltas[l + 1] as Float32Array;
        const wp = weights[l] as Param;
        const gw = wp.grad.fill(0);
        const gb = (biases[l] as Param).grad.fill(0);
        for (let r = 0; r < b; r++) {
          for (let o = 0; o < m; o++) gb[o] = (gb[o] as number) + (d[r * m + o] as number);
          for (let i = 0; i < n; i++) {
            const ai = a[r * n + i] as number;
            if (ai === 0) continue;
            const wo = i * m;
            for (let o = 0; o < m; o++) gw[wo + o] = (gw[wo + o] as number) + ai * (d[r * m + o] as number);
          }
        }
        if (l > 0) {
          const dPrev = deltas[l] as Float32Array;
          for (let r = 0; r < b; r++) {
            for (let i = 0; i < n; i++) {
              if ((a[r * n + i] as number) <= 0) {
                dPrev[r * n + i] = 0; // ReLU gate
                continue;
              }
              let s = 0;
              const wo = i * m;
              for (let o = 0; o < m; o++) s += (d[r * m + o] as number) * (wp.value[wo + o] as number);
              dPrev[r * n + i] = s;
            }
          }
        }
      }

      // AdamW step.
      step++;
      const c1 = 1 - beta1 ** step;
      const c2 = 1 - beta2 ** step;
      for (const pr of [...weights, ...biases]) {
        const { value, grad, m, v } = pr;
        for (let k = 0; k < value.length; k++) {
          const g = grad[k] as number;
          const mk = beta1 * (m[k] as number) + (1 - beta1) * g;
          const vk = beta2 * (v[k] as number) + (1 - beta2) * g * g;
          m[k] = mk;
          v[k] = vk;
          const decay = pr.decay ? wd * (value[k] as number) : 0;
          value[k] = (value[k] as number) - lr * (mk / c1 / (Math.sqrt(vk / c2) + eps) + decay);
        }
      }
    }
    opts.onEpoch?.(epoch, lossSum / rows);
  }

  return weights.map((w, l) => ({
    weights: w.value,
    bias: (biases[l] as Param).value,
    activation: l === nLayers - 1 ? 'sigmoid' : 'relu',
  }));
}
