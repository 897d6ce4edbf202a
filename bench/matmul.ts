/**
 * f32 square matmul, C = A·B at n = 256, 512, 1024, 2048: our generated kernel (the best
 * variant for the adapter) against TensorFlow.js's WebGPU backend on the same Dawn device
 * and TensorFlow.js's WASM backend, in one run. Prints GFLOP/s (medians after warm-up),
 * the ratios ours/peer, and the max abs difference between ours and each peer.
 *
 * Timing: ours and tfjs-webgpu batch many dispatches per submit and wait once
 * (onSubmittedWorkDone); ours is cross-checked with timestamp queries when the device has
 * them. tfjs-wasm runs synchronously on one thread.
 *
 * `--autotune` adds, per size, what runtime/autotune.ts picks for a plan's matmul of that
 * shape (storage-buffer operands, so sg-texture is not among the candidates) against the
 * cost model's default, from the tuner's own timings (wall clock, medians).
 *
 *   npm run bench -- matmul [--sizes 256,512] [--quick] [--autotune]
 */
import { createMatmulRun, type MatmulRun } from "../runtime/matmul-run.ts";
import { generateMatmul, type MatmulSpec } from "../kernels/matmul.ts";
import { targetFromGpu } from "../runtime/kernel-target.ts";
import { tuneMatmul } from "../runtime/autotune.ts";
import { acquireGpu, type Gpu } from "../runtime/device.ts";
import { type Contender, contender, flushTfjsWebgpu, loadAverage, loadPeers, maxAbsDiff, peersLine, race, randomMatrix, type Tf } from "./peers.ts";

interface Options {
  sizes: number[];
  /** minimum seconds per timed batch */
  batchSeconds: number;
  batches: number;
  autotune: boolean;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = { sizes: [256, 512, 1024, 2048], batchSeconds: 0.4, batches: 5, autotune: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--sizes") o.sizes = argv[++i].split(",").map(Number);
    else if (argv[i] === "--quick") Object.assign(o, { batchSeconds: 0.15, batches: 3 });
    else if (argv[i] === "--autotune") o.autotune = true;
  }
  return o;
}

// ---------------------------------------------------------------------------------------
// ours

interface Ours {
  readonly run: MatmulRun;
  /** seconds on the device for `reps` dispatches, from timestamp queries */
  batch(reps: number, fill: boolean): Promise<number | void>;
  result(): Promise<Float32Array>;
}

const square = (n: number): MatmulSpec => ({
  batchShape: [],
  M: n,
  N: n,
  K: n,
  a: { offset: 0, batchStrides: [], rowStride: n, colStride: 1 },
  b: { offset: 0, batchStrides: [], rowStride: n, colStride: 1 },
});

async function ours(gpu: Gpu, n: number, a: Float32Array, b: Float32Array, variant?: "sg-buffer"): Promise<Ours> {
  const kernel = generateMatmul(square(n), targetFromGpu(gpu), variant ? { variant } : { allowTexture: true });
  const run = await createMatmulRun(gpu.device, kernel, { aElems: n * n, bElems: n * n, cElems: n * n });
  run.write(a, b);
  await run.run(); // compiles, fills the B texture once
  const dev = gpu.device;
  const query = gpu.hasTimestamps ? dev.createQuerySet({ type: "timestamp", count: 2 }) : undefined;
  const resolve = query && dev.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const readTs = query && dev.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  return {
    run,
    async batch(reps, fill) {
      const enc = dev.createCommandEncoder();
      run.encode(enc, reps, { fill, ...(query ? { timestamps: { querySet: query, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } } : {}) });
      if (query) {
        enc.resolveQuerySet(query, 0, 2, resolve!, 0);
        enc.copyBufferToBuffer(resolve!, 0, readTs!, 0, 16);
      }
      dev.queue.submit([enc.finish()]);
      await dev.queue.onSubmittedWorkDone();
      if (!query) return;
      await readTs!.mapAsync(GPUMapMode.READ);
      const [t0, t1] = new BigUint64Array(readTs!.getMappedRange());
      readTs!.unmap();
      return t1 > t0 ? Number(t1 - t0) / 1e9 : undefined;
    },
    result: () => run.run(),
  };
}

// ---------------------------------------------------------------------------------------
// TensorFlow.js peers

interface Peer {
  readonly contender: Contender;
  /** C = A·B once, read back */
  result(): Promise<Float32Array>;
  dispose(): void;
}

async function tfjsWebgpu(tf: Tf, gpu: Gpu, n: number, a: Float32Array, b: Float32Array): Promise<Peer> {
  await tf.setBackend("webgpu");
  const ta = tf.tensor2d(a, [n, n]);
  const tb = tf.tensor2d(b, [n, n]);
  return {
    contender: contender("tfjs-webgpu", async (reps) => {
      await tf.setBackend("webgpu");
      for (let r = 0; r < reps; r++) tf.matMul(ta, tb).dispose();
      await flushTfjsWebgpu(tf, gpu);
    }),
    async result() {
      await tf.setBackend("webgpu");
      const tc = tf.matMul(ta, tb);
      const c = (await tc.data()) as Float32Array;
      tc.dispose();
      return c;
    },
    dispose: () => tf.dispose([ta, tb]),
  };
}

async function tfjsWasm(tf: Tf, n: number, a: Float32Array, b: Float32Array): Promise<Peer> {
  await tf.setBackend("wasm");
  const ta = tf.tensor2d(a, [n, n]);
  const tb = tf.tensor2d(b, [n, n]);
  return {
    contender: contender("tfjs-wasm", async (reps) => {
      await tf.setBackend("wasm");
      for (let r = 0; r < reps; r++) tf.matMul(ta, tb).dispose(); // synchronous
    }),
    async result() {
      await tf.setBackend("wasm");
      const tc = tf.matMul(ta, tb);
      const c = tc.dataSync() as Float32Array;
      tc.dispose();
      return c;
    },
    dispose: () => tf.dispose([ta, tb]),
  };
}

// ---------------------------------------------------------------------------------------

export async function main(argv: readonly string[] = []): Promise<void> {
  const o = parseArgs(argv);
  const gpu = await acquireGpu();
  const info = gpu.info;
  console.log(`# matmul f32, C = A·B (n×n), GFLOP/s = 2n³/t; after warm-up, median of ${o.batches} rounds in which every contender runs one batch`);
  console.log(
    `# device: ${info.description} (${info.vendor}/${info.architecture}${info.isFallback ? ", CPU fallback" : ""}), subgroups ${info.subgroupMin}-${info.subgroupMax}`,
  );
  console.log(
    `# LP_NUM_THREADS=${process.env.LP_NUM_THREADS ?? "(unset)"}, node ${process.version}, load average ${loadAverage()} (other work on the machine slows every column)`,
  );
  const peers = await loadPeers(gpu);
  const { tf, webgpu, wasm } = peers;
  console.log(peersLine(peers));
  const rows: string[][] = [];
  const head = [
    "n",
    "ours variant",
    "ours",
    "ours+fill",
    "ts-check",
    "sg-buffer",
    "tfjs-webgpu",
    "tfjs-wasm",
    "ours/webgpu",
    "ours/wasm",
    "max|Δ| webgpu",
    "max|Δ| wasm",
  ];
  for (const n of o.sizes) {
    const a = randomMatrix(n * n, 1);
    const b = randomMatrix(n * n, 2);
    const gf = (s: number): number => (2 * n ** 3) / s / 1e9;
    const best = await ours(gpu, n, a, b);
    const hasTex = Boolean(best.run.kernel.bTexture);
    const buf = hasTex ? await ours(gpu, n, a, b, "sg-buffer") : undefined;
    const w = webgpu ? await tfjsWebgpu(tf, gpu, n, a, b) : undefined;
    const m = wasm ? await tfjsWasm(tf, n, a, b) : undefined;
    const cs = [
      contender("ours", (reps) => best.batch(reps, false)),
      ...(hasTex ? [contender("ours+fill", (reps) => best.batch(reps, true))] : []),
      ...(buf ? [contender("sg-buffer", (reps) => buf.batch(reps, false))] : []),
      ...(w ? [w.contender] : []),
      ...(m ? [m.contender] : []),
    ];
    const t = await race(cs, o);
    const cOurs = await best.result();
    const cW = w && (await w.result());
    const cM = m && (await m.result());
    for (const x of [best, buf]) x?.run.destroy();
    for (const x of [w, m]) x?.dispose();
    const f = (x: number | undefined): string => (x === undefined ? "-" : x.toFixed(1));
    const g = (name: string): number | undefined => {
      const x = t.get(name);
      return x && gf(x.s);
    };
    const ratio = (peer: string, digits: number): string => {
      const p = t.get(peer);
      return p ? `${(p.s / t.get("ours")!.s).toFixed(digits)}×` : "-";
    };
    const dev = t.get("ours")!.device;
    rows.push([
      String(n),
      best.run.kernel.variant,
      f(g("ours")),
      f(g("ours+fill")),
      f(dev && gf(dev)),
      f(g("sg-buffer")),
      f(g("tfjs-webgpu")),
      f(g("tfjs-wasm")),
      ratio("tfjs-webgpu", 1),
      ratio("tfjs-wasm", 2),
      cW ? maxAbsDiff(cOurs, cW) : "-",
      cM ? maxAbsDiff(cOurs, cM) : "-",
    ]);
    console.log(`  n=${n} done`);
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => `| ${r.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  console.log(line(head));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const r of rows) console.log(line(r));
  console.log(
    "ours: matmul dispatches only, B already in its texture (a weight); ours+fill: B copied into the texture every call;\n" +
      "ts-check: ours from timestamp queries; sg-buffer: our storage-buffer-only kernel (what plans use without textures).\n" +
      "max|Δ|: max abs difference of C between ours and the peer (entries ~ ±sqrt(n/9)); 0 = bitwise equal.",
  );
  if (o.autotune)
    for (const n of o.sizes) {
      const r = await tuneMatmul(gpu, square(n));
      const gf = (ms: number): string => ((2 * n ** 3) / ms / 1e6).toFixed(1);
      console.log(
        `autotune n=${n}: default ${r.defaultVariant} ${gf(r.defaultMs)} GFLOP/s, tuned ${r.variant} ${gf(r.bestMs)} GFLOP/s (${r.tried} candidates)`,
      );
    }
  console.log(`# load average at the end: ${loadAverage()}`);
  tf.engine().reset();
  gpu.destroy();
}
