/**
 * One pre-norm transformer layer forward (models/bench/transformer-layer.dehvf: the std
 * library's ViTLayer, d 512, 8 heads, FFN 2048, exact-erf GELU; B 4, N 128, fp32): our plan
 * against the same layer written in TensorFlow.js, on its WebGPU backend (same Dawn device)
 * and its WASM backend, with the same weights (initAllParams(model, 0)) and input
 * (syntheticInputs(model, 0, dims)). Checks the outputs agree (max |Δ| ours vs each peer),
 * then times each contender: median over interleaved rounds after warm-up, every call
 * uploading the input and reading the output back. Then our per-kernel profile (median of
 * `rounds` profiled runs per kernel).
 *
 *   npm run bench -- layer [--rounds 7] [--quick] [--affine-noise] [--interp] [--no-profile]
 *
 * --affine-noise: add deterministic noise to the biases and LayerNorm affines (zeros and
 * ones at init, which would leave them unchecked). --interp: also check every contender
 * against the float64 interpreter (slow: tens of seconds).
 */
import type { CompiledModel } from "../compiler/elaborate.ts";
import { buildPlan, type Plan } from "../lowering/plan.ts";
import type { Tensor } from "../compiler/tensor.ts";
import { acquireGpu } from "../runtime/device.ts";
import { PlanExecutor } from "../runtime/executor.ts";
import { initAllParams, runInterp, syntheticInputs } from "../runtime/interp-backend.ts";
import { planTarget } from "../runtime/webgpu-backend.ts";
import { loadBenchModel, table } from "./measure.ts";
import { contender, type Contender, loadAverage, loadPeers, maxAbsDelta, median, peersLine, race, randomMatrix, type Tf } from "./peers.ts";

const MODEL_FILE = "models/bench/transformer-layer.dehvf";
const MODEL_NAME = "TransformerLayer";
/** the layer's hyper-parameters, as in MODEL_FILE */
const D = 512;
const HEADS = 8;
const HIDDEN = 2048;
const EPS = 1e-5;
const DIMS = { B: 4, N: 128 };
/** outputs agree when max |Δ| is at most this (fp32, sums over up to 2048 terms, |y| ~ 1) */
const TOLERANCE = 1e-3;

interface Options {
  rounds: number;
  warmup: number;
  affineNoise: boolean;
  interp: boolean;
  profile: boolean;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = { rounds: 7, warmup: 2, affineNoise: false, interp: false, profile: true };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--rounds") o.rounds = Number(argv[++i]);
    else if (argv[i] === "--quick") Object.assign(o, { rounds: 3, warmup: 1 });
    else if (argv[i] === "--affine-noise") o.affineNoise = true;
    else if (argv[i] === "--interp") o.interp = true;
    else if (argv[i] === "--no-profile") o.profile = false;
  }
  return o;
}

/** FLOPs of the layer's matmuls: q, k, v, o projections, q·kᵀ and p·v, the two FFN layers. */
function matmulFlops(B: number, N: number): number {
  const tokens = B * N;
  return 2 * tokens * (4 * D * D + 2 * D * HIDDEN) + 2 * 2 * B * N * N * D;
}

function withAffineNoise(params: Map<string, Tensor>): Map<string, Tensor> {
  const out = new Map(params);
  let seed = 17;
  for (const [name, t] of params)
    if (/\.(b|bias|weight)$/.test(name)) {
      const noise = randomMatrix(t.data.length, seed++);
      out.set(name, { shape: t.shape, data: t.data.map((x, i) => x + 0.1 * noise[i]) });
    }
  return out;
}

/** "8 matmul (sg-buffer s8 16x8x4 A4 ×7, …), 6 reduce, …" */
function variantSummary(plan: Plan): string {
  const byKind = new Map<string, Map<string, number>>();
  for (const k of plan.kernels) {
    const v = byKind.get(k.kind) ?? new Map<string, number>();
    byKind.set(k.kind, v);
    v.set(k.variant, (v.get(k.variant) ?? 0) + 1);
  }
  return [...byKind]
    .map(([kind, vs]) => {
      const n = [...vs.values()].reduce((a, b) => a + b, 0);
      const detail = [...vs].filter(([v]) => v !== kind).map(([v, c]) => `${v} ×${c}`);
      return `${n} ${kind}${detail.length ? ` (${detail.join(", ")})` : ""}`;
    })
    .join(", ");
}

// ---------------------------------------------------------------------------------------
// the same layer in TensorFlow.js

type T2 = import("@tensorflow/tfjs-core").Tensor;
type T1 = import("@tensorflow/tfjs-core").Tensor;

interface TfWeights {
  readonly ln1: [T1, T1];
  readonly ln2: [T1, T1];
  /** [in, out] (tfjs's Dense layout: transposed once from our [out, in]) and bias */
  readonly q: [T2, T1];
  readonly k: [T2, T1];
  readonly v: [T2, T1];
  readonly o: [T2, T1];
  readonly fc1: [T2, T1];
  readonly fc2: [T2, T1];
}

/** Uploads the weights to tf's current backend. */
function tfWeights(tf: Tf, params: ReadonlyMap<string, Tensor>): TfWeights {
  const get = (name: string): Tensor => {
    const t = params.get(`layer.${name}`);
    if (!t) throw new Error(`no parameter layer.${name}`);
    return t;
  };
  const vec = (name: string): T1 => tf.tensor1d(Float32Array.from(get(name).data));
  const linear = (name: string): [T2, T1] => {
    const w = get(`${name}.w`);
    const [out, inp] = w.shape;
    const wt = new Float32Array(out * inp);
    for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) wt[i * out + o] = w.data[o * inp + i];
    return [tf.tensor2d(wt, [inp, out]), vec(`${name}.b`)];
  };
  return {
    ln1: [vec("ln1.weight"), vec("ln1.bias")],
    ln2: [vec("ln2.weight"), vec("ln2.bias")],
    q: linear("attn.wq"),
    k: linear("attn.wk"),
    v: linear("attn.wv"),
    o: linear("attn.wo"),
    fc1: linear("mlp.fc1"),
    fc2: linear("mlp.fc2"),
  };
}

const disposeWeights = (tf: Tf, w: TfWeights): void => tf.dispose(Object.values(w).flat());

/** The layer on x [B·N, D] (row-major [B, N, D]); same math as ViTLayer in models/std/vit.dehvf. */
function tfLayer(tf: Tf, w: TfWeights, x: T2, B: number, N: number): T2 {
  return tf.tidy(() => {
    const dh = D / HEADS;
    const layerNorm = (t: T2, [g, b]: [T1, T1]): T2 => {
      const xc = tf.sub(t, tf.mean(t, -1, true));
      const v = tf.mean(tf.mul(xc, xc), -1, true);
      return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(v, EPS))), g), b);
    };
    const linear = (t: T2, [wt, b]: [T2, T1]): T2 => tf.fused.matMul({ a: t, b: wt, bias: b });
    const heads = (t: T2) => tf.transpose(tf.reshape(t, [B, N, HEADS, dh]), [0, 2, 1, 3]); // [B, H, N, dh]
    const a = layerNorm(x, w.ln1);
    const q = heads(linear(a, w.q));
    const k = heads(linear(a, w.k));
    const v = heads(linear(a, w.v));
    const p = tf.softmax(tf.div(tf.matMul(q, k, false, true), Math.sqrt(dh)), -1);
    const merged = tf.reshape(tf.transpose(tf.matMul(p, v), [0, 2, 1, 3]), [B * N, D]);
    const h = tf.add(x, linear(merged, w.o));
    const f = linear(layerNorm(h, w.ln2), w.fc1);
    const gelu = tf.mul(tf.mul(f, 0.5), tf.add(tf.erf(tf.mul(f, Math.SQRT1_2)), 1)); // exact: 0.5·x·(1 + erf(x/√2))
    return tf.add(h, linear(gelu, w.fc2));
  });
}

interface Peer {
  readonly name: string;
  readonly contender: Contender;
  /** one forward, read back */
  forward(): Promise<Float32Array>;
  /** tfjs kernels one forward dispatches */
  kernels(): Promise<number>;
  dispose(): void;
}

async function tfPeer(tf: Tf, backend: "webgpu" | "wasm", params: ReadonlyMap<string, Tensor>, x: Float32Array): Promise<Peer> {
  await tf.setBackend(backend);
  const w = tfWeights(tf, params);
  const { B, N } = DIMS;
  const forward = async (): Promise<Float32Array> => {
    const tx = tf.tensor2d(x, [B * N, D]);
    const ty = tfLayer(tf, w, tx, B, N);
    const y = (await ty.data()) as Float32Array;
    tf.dispose([tx, ty]);
    return y;
  };
  const name = `tfjs-${backend}`;
  return {
    name,
    contender: contender(name, async (reps) => {
      await tf.setBackend(backend);
      for (let r = 0; r < reps; r++) await forward();
    }),
    async forward() {
      await tf.setBackend(backend);
      return forward();
    },
    async kernels() {
      await tf.setBackend(backend);
      const info = await tf.profile(forward);
      return info.kernels.length;
    },
    dispose: () => disposeWeights(tf, w),
  };
}

// ---------------------------------------------------------------------------------------

export async function main(argv: readonly string[] = []): Promise<void> {
  const o = parseArgs(argv);
  const gpu = await acquireGpu();
  const info = gpu.info;
  const { B, N } = DIMS;
  const flops = matmulFlops(B, N);
  console.log(`# one pre-norm transformer layer forward (${MODEL_FILE}): d ${D}, ${HEADS} heads, FFN ${HIDDEN}, GELU (erf), B ${B}, N ${N}, fp32`);
  console.log(
    `# matmul FLOPs ${(flops / 1e9).toFixed(3)} G; after ${o.warmup} warm-up call(s), median of ${o.rounds} interleaved rounds; every call uploads x and reads y back`,
  );
  console.log(
    `# device: ${info.description} (${info.vendor}/${info.architecture}${info.isFallback ? ", CPU fallback" : ""}), subgroups ${info.subgroupMin}-${info.subgroupMax}`,
  );
  console.log(
    `# LP_NUM_THREADS=${process.env.LP_NUM_THREADS ?? "(unset)"}, node ${process.version}, load average ${loadAverage()} (other work on the machine slows every column)`,
  );
  const peers = await loadPeers(gpu);
  console.log(peersLine(peers));
  const { tf } = peers;

  const model: CompiledModel = loadBenchModel(MODEL_FILE, MODEL_NAME);
  const params0 = initAllParams(model, 0);
  const params = o.affineNoise ? withAffineNoise(params0) : params0;
  const inputs = syntheticInputs(model, 0, DIMS);
  const x = Float32Array.from(inputs.get("x")!.data);

  const t0 = performance.now();
  const plan = buildPlan(model, DIMS, planTarget(gpu));
  const ex = await PlanExecutor.create(gpu, plan, model.program.sources);
  console.log(
    `# ours: ${plan.kernels.length} kernels (${plan.irNodes} IR nodes): ${variantSummary(plan)}; plan + pipelines ${(performance.now() - t0).toFixed(0)} ms`,
  );
  ex.writeParams(params);
  const oursForward = async (): Promise<Float32Array> => Float32Array.from((await ex.run(inputs))[0].data);

  const ps: Peer[] = [];
  if (peers.webgpu) ps.push(await tfPeer(tf, "webgpu", params, x));
  if (peers.wasm) ps.push(await tfPeer(tf, "wasm", params, x));
  for (const p of ps) console.log(`# ${p.name}: ${await p.kernels()} kernels per forward`);

  // correctness first (each forward once, cold), then time
  const yOurs = await oursForward();
  const ys = new Map<string, Float32Array>([["ours", yOurs]]);
  for (const p of ps) ys.set(p.name, await p.forward());
  const yMax = yOurs.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  let ref: Float64Array | undefined;
  if (o.interp) {
    const t = performance.now();
    ref = runInterp(model, params, { seed: 0, dims: DIMS, inputs })[0].data;
    console.log(`# float64 interpreter reference: ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }

  const t = await race(
    [
      contender("ours", async (reps) => {
        for (let r = 0; r < reps; r++) await oursForward();
      }),
      ...ps.map((p) => p.contender),
    ],
    { batchSeconds: 0, batches: o.rounds, warmup: o.warmup },
  );

  const s = (name: string): number | undefined => t.get(name)?.s;
  const ours = s("ours")!;
  const rows: (string | number)[][] = [["contender", "ms", "GFLOP/s", "peer/ours", "max|Δ| vs ours", ...(ref ? ["max|Δ| vs f64"] : [])]];
  let mismatch = false;
  for (const name of ["ours", ...ps.map((p) => p.name)]) {
    const sec = s(name)!;
    const d = name === "ours" ? undefined : maxAbsDelta(yOurs, ys.get(name)!);
    if (d !== undefined && !(d <= TOLERANCE)) mismatch = true;
    rows.push([
      name,
      (sec * 1e3).toFixed(1),
      (flops / sec / 1e9).toFixed(2),
      name === "ours" ? "1" : `${(sec / ours).toFixed(2)}×`,
      d === undefined ? "-" : d.toExponential(1),
      ...(ref ? [maxAbsDelta(ref, ys.get(name)!).toExponential(1)] : []),
    ]);
  }
  console.log(table(rows));
  console.log(
    `peer/ours: the peer's time over ours (> 1: ours is faster); max|Δ|: max abs difference of the ${B}×${N}×${D} output (max |y| = ${yMax.toFixed(2)}), agreement within ${TOLERANCE}: ${mismatch ? "NO" : "yes"}`,
  );
  for (const name of ["tfjs-webgpu", "tfjs-wasm"]) {
    const p = s(name);
    if (p) console.log(`# ours vs ${name}: ${(p / ours).toFixed(2)}× ${p > ours ? "faster" : "slower"}`);
  }

  if (o.profile && gpu.hasTimestamps) {
    const runs: number[][] = [];
    for (let r = 0; r < o.rounds; r++) runs.push(await ex.profile(inputs));
    const ms = plan.kernels.map((k) => median(runs.map((x) => x[k.index])));
    const total = ms.reduce((a, b) => a + b, 0);
    const prof: (string | number)[][] = [["#", "block", "kernel", "variant", "workgroups", "MFLOP", "ms", "GFLOP/s", "share"]];
    for (const k of plan.kernels) {
      const m = ms[k.index];
      prof.push([
        k.index,
        k.path || "model",
        k.label,
        k.variant,
        k.workgroups.join("x"),
        (k.flops / 1e6).toFixed(1),
        m.toFixed(2),
        (k.flops / m / 1e6).toFixed(1),
        `${((100 * m) / total).toFixed(1)}%`,
      ]);
    }
    console.log(`\nours, per kernel (timestamp queries, one pass per kernel, median of ${o.rounds} runs; sum ${total.toFixed(1)} ms):\n${table(prof)}`);
    const byKind = new Map<string, number>();
    for (const k of plan.kernels) byKind.set(k.kind, (byKind.get(k.kind) ?? 0) + ms[k.index]);
    console.log(`by kind: ${[...byKind].map(([kind, m]) => `${kind} ${m.toFixed(1)} ms (${((100 * m) / total).toFixed(0)}%)`).join(", ")}`);
  }
  console.log(`# load average at the end: ${loadAverage()}`);

  for (const p of ps) p.dispose();
  ex.destroy();
  tf.engine().reset();
  gpu.destroy();
  if (mismatch) throw new Error(`layer outputs differ by more than ${TOLERANCE}`);
}
