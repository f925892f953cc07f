/**
 * A minimal ONNX writer for multi-layer perceptrons: just enough of the protobuf wire
 * format (varints, fixed32, length-delimited fields) and of onnx.proto to emit a valid
 * ModelProto, with no dependency beyond Node.
 *
 *   inputs ─► [Concat axis=1] ─► Gemm ─► Relu ─► … ─► Gemm ─► Sigmoid ─► output
 *
 * The batch dimension is symbolic ("batch"); every tensor is float32. Field numbers
 * follow onnx/onnx.proto (IR version 8, default-domain opset 13).
 */
import { createRng } from './rng.js';

export type Activation = 'relu' | 'sigmoid' | 'none';

export interface MlpInput {
  name: string;
  /** Number of features (the second dimension). */
  dim: number;
}

export interface MlpLayer {
  /** Shape [in, out], row-major. */
  weights: Float32Array;
  /** Shape [out]. */
  bias: Float32Array;
  activation: Activation;
}

export interface MlpSpec {
  /** Several inputs are concatenated on axis 1, in this order, before the first layer. */
  inputs: MlpInput[];
  layers: MlpLayer[];
  outputName: string;
  /** ModelProto.producer_name; default "inferq-examples". */
  producer?: string;
}

// ---- protobuf wire format -------------------------------------------------------------

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;
const utf8 = new TextEncoder();

class ProtoWriter {
  private buf = new Uint8Array(256);
  private len = 0;

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  private rawVarint(value: number | bigint): void {
    // Negative int64 values are written as their 64-bit two's complement (10 bytes).
    let v = typeof value === 'bigint' || value < 0 ? BigInt.asUintN(64, BigInt(value)) : value;
    if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new Error(`varint: ${v} is not a safe integer`);
    this.reserve(10);
    if (typeof v === 'bigint') {
      while (v >= 0x80n) {
        this.buf[this.len++] = Number(v & 0x7fn) | 0x80;
        v >>= 7n;
      }
      this.buf[this.len++] = Number(v);
      return;
    }
    while (v >= 0x80) {
      this.buf[this.len++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.len++] = v;
  }

  private key(field: number, wire: number): void {
    this.rawVarint(field * 8 + wire);
  }

  varint(field: number, value: number | bigint): this {
    this.key(field, WIRE_VARINT);
    this.rawVarint(value);
    return this;
  }

  float(field: number, value: number): this {
    this.key(field, WIRE_FIXED32);
    this.reserve(4);
    new DataView(this.buf.buffer).setFloat32(this.len, value, true);
    this.len += 4;
    return this;
  }

  bytes(field: number, data: Uint8Array): this {
    this.key(field, WIRE_LEN);
    this.rawVarint(data.length);
    this.reserve(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, utf8.encode(value));
  }

  message(field: number, fill: (w: ProtoWriter) => void): this {
    const inner = new ProtoWriter();
    fill(inner);
    return this.bytes(field, inner.finish());
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

// ---- onnx.proto messages ----------------------------------------------------------------

const ELEM_FLOAT = 1; // TensorProto.DataType.FLOAT
const ATTR_FLOAT = 1; // AttributeProto.AttributeType.FLOAT
const ATTR_INT = 2; // AttributeProto.AttributeType.INT

type Attr = { name: string; f: number } | { name: string; i: number };

interface Node {
  opType: string;
  name: string;
  inputs: string[];
  outputs: string[];
  attrs?: Attr[];
}

function writeNode(w: ProtoWriter, n: Node): void {
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name).string(4, n.opType);
  for (const a of n.attrs ?? []) {
    w.message(5, (aw) => {
      aw.string(1, a.name);
      if ('f' in a) aw.float(2, a.f).varint(20, ATTR_FLOAT);
      else aw.varint(3, a.i).varint(20, ATTR_INT);
    });
  }
}

function writeTensor(w: ProtoWriter, name: string, dims: number[], values: Float32Array): void {
  for (const d of dims) w.varint(1, d);
  w.varint(2, ELEM_FLOAT).string(8, name);
  const raw = new Uint8Array(values.length * 4);
  const view = new DataView(raw.buffer);
  values.forEach((v, k) => view.setFloat32(k * 4, v, true));
  w.bytes(9, raw);
}

/** ValueInfoProto for a float32 [batch, dim] tensor. */
function writeValueInfo(w: ProtoWriter, name: string, dim: number): void {
  w.string(1, name).message(2, (type) =>
    type.message(1, (tensor) =>
      tensor.varint(1, ELEM_FLOAT).message(2, (shape) => {
        shape.message(1, (d) => d.string(2, 'batch'));
        shape.message(1, (d) => d.varint(1, dim));
      }),
    ),
  );
}

/** Encodes `spec` as an ONNX model (ir_version 8, opset 13). Throws if shapes disagree. */
export function buildMlp(spec: MlpSpec): Uint8Array {
  const dims = checkSpec(spec);
  const nodes: Node[] = [];
  const inits: { name: string; dims: number[]; values: Float32Array }[] = [];
  let current = spec.inputs[0]?.name ?? '';
  if (spec.inputs.length > 1) {
    current = 'concat.out';
    nodes.push({ opType: 'Concat', name: 'concat', inputs: spec.inputs.map((i) => i.name), outputs: [current], attrs: [{ name: 'axis', i: 1 }] });
  }
  spec.layers.forEach((layer, k) => {
    const last = k === spec.layers.length - 1;
    const [inDim, outDim] = [dims[k] as number, dims[k + 1] as number];
    const gemmOut = last && layer.activation === 'none' ? spec.outputName : `layer${k}.gemm`;
    inits.push({ name: `layer${k}.weight`, dims: [inDim, outDim], values: layer.weights });
    inits.push({ name: `layer${k}.bias`, dims: [outDim], values: layer.bias });
    nodes.push({
      opType: 'Gemm',
      name: `layer${k}.gemm`,
      inputs: [current, `layer${k}.weight`, `layer${k}.bias`],
      outputs: [gemmOut],
      attrs: [{ name: 'alpha', f: 1 }, { name: 'beta', f: 1 }, { name: 'transB', i: 0 }],
    });
    current = gemmOut;
    if (layer.activation !== 'none') {
      const op = layer.activation === 'relu' ? 'Relu' : 'Sigmoid';
      const out = last ? spec.outputName : `layer${k}.${layer.activation}`;
      nodes.push({ opType: op, name: `layer${k}.${layer.activation}`, inputs: [current], outputs: [out] });
      current = out;
    }
  });

  return new ProtoWriter()
    .varint(1, 8) // ir_version
    .string(2, spec.producer ?? 'inferq-examples')
    .message(7, (g) => {
      for (const n of nodes) g.message(1, (nw) => writeNode(nw, n));
      g.string(2, 'mlp');
      for (const t of inits) g.message(5, (tw) => writeTensor(tw, t.name, t.dims, t.values));
      for (const i of spec.inputs) g.message(11, (vw) => writeValueInfo(vw, i.name, i.dim));
      g.message(12, (vw) => writeValueInfo(vw, spec.outputName, dims[dims.length - 1] as number));
    })
    .message(8, (o) => o.string(1, '').varint(2, 13))
    .finish();
}

/** Returns the layer widths [in, h1, …, out] after checking every weight and bias length. */
function checkSpec(spec: MlpSpec): number[] {
  if (spec.inputs.length === 0) throw new Error('mlp: expected at least one input, got 0');
  if (spec.layers.length === 0) throw new Error('mlp: expected at least one layer, got 0');
  const dims = [spec.inputs.reduce((s, i) => s + i.dim, 0)];
  spec.layers.forEach((l, k) => {
    const inDim = dims[k] as number;
    const outDim = l.bias.length;
    if (outDim === 0 || l.weights.length !== inDim * outDim) {
      throw new Error(`mlp layer ${k}: expected weights of ${inDim}x${outDim} = ${inDim * outDim} values, got ${l.weights.length}`);
    }
    dims.push(outDim);
  });
  return dims;
}

// ---- random weights and a reference forward pass ---------------------------------------

export interface RandomMlpOptions {
  /** Default "features". */
  inputName?: string;
  /** Default "score". */
  outputName?: string;
  producer?: string;
  /** Standard deviation of the random biases; default 0.05. */
  biasStd?: number;
}

/**
 * Deterministic random MLP over widths `dims` ([in, h1, …, out]): ReLU hidden layers
 * with He-normal weights, a sigmoid output layer with Xavier-normal weights.
 */
export function randomMlp(dims: number[], seed: number, opts: RandomMlpOptions = {}): MlpSpec {
  if (dims.length < 2) throw new Error(`randomMlp: expected at least 2 widths, got [${dims.join(',')}]`);
  const rng = createRng(seed);
  const biasStd = opts.biasStd ?? 0.05;
  const layers: MlpLayer[] = [];
  for (let k = 0; k + 1 < dims.length; k++) {
    const [inDim, outDim] = [dims[k] as number, dims[k + 1] as number];
    const last = k + 2 === dims.length;
    const std = last ? Math.sqrt(2 / (inDim + outDim)) : Math.sqrt(2 / inDim);
    const weights = Float32Array.from({ length: inDim * outDim }, () => rng.normal() * std);
    const bias = Float32Array.from({ length: outDim }, () => rng.normal() * biasStd);
    layers.push({ weights, bias, activation: last ? 'sigmoid' : 'relu' });
  }
  return {
    inputs: [{ name: opts.inputName ?? 'features', dim: dims[0] as number }],
    layers,
    outputName: opts.outputName ?? 'score',
    ...(opts.producer !== undefined ? { producer: opts.producer } : {}),
  };
}

/**
 * Pure-JS forward pass (float64 accumulation), the reference the ONNX encoding is
 * checked against. `inputs` maps each input name to `rows × dim` row-major values.
 */
export function forwardMlp(spec: MlpSpec, inputs: Record<string, Float32Array>, rows: number): Float32Array {
  const dims = checkSpec(spec);
  let width = dims[0] as number;
  let act = new Float64Array(rows * width);
  let col = 0;
  for (const input of spec.inputs) {
    const data = inputs[input.name];
    if (data?.length !== rows * input.dim) {
      throw new Error(`input "${input.name}": expected ${rows}x${input.dim} values, got ${data?.length ?? 'none'}`);
    }
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < input.dim; j++) act[r * width + col + j] = data[r * input.dim + j] as number;
    }
    col += input.dim;
  }
  for (const layer of spec.layers) {
    const outDim = layer.bias.length;
    const next = new Float64Array(rows * outDim);
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < outDim; o++) {
        let z = layer.bias[o] as number;
        for (let i = 0; i < width; i++) z += (act[r * width + i] as number) * (layer.weights[i * outDim + o] as number);
        next[r * outDim + o] = layer.activation === 'relu' ? Math.max(0, z) : layer.activation === 'sigmoid' ? 1 / (1 + Math.exp(-z)) : z;
      }
    }
    act = next;
    width = outDim;
  }
  return Float32Array.from(act);
}
