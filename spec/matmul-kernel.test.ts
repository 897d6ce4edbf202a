/**
 * Every matmul variant the local adapter can run, against a float64 reference, on awkward
 * shapes: 1-sized dims, primes, sizes that are not multiples of any tile, K = 1, a
 * transposed B through strides, offsets, a broadcast batch, a grid folded into y/z by a
 * small per-dimension limit, and a custom epilogue.
 *
 * Runs on any WebGPU adapter (lavapipe in CI). Without one it skips, saying why.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createMatmulRun } from "../runtime/matmul-run.ts";
import {
  DEFAULT_EPILOGUE,
  generateMatmul,
  supportedVariants,
  type KernelTarget,
  type MatmulOperand,
  type MatmulSpec,
  type MatmulVariant,
} from "../kernels/matmul.ts";
import { targetFromGpu } from "../runtime/kernel-target.ts";
import { acquireGpu, type Gpu } from "../runtime/device.ts";

/** deterministic uniform(-1, 1) */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s / 2 ** 32) * 2 - 1;
  };
}

const prod = (v: readonly number[]): number => v.reduce((x, y) => x * y, 1);

/** elements a strided operand spans (the buffer it needs) */
function extent(op: MatmulOperand, batch: readonly number[], rows: number, cols: number): number {
  return op.offset + (rows - 1) * op.rowStride + (cols - 1) * op.colStride + batch.reduce((acc, d, i) => acc + (d - 1) * op.batchStrides[i], 0) + 1;
}

function unravel(b: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = b % shape[d];
    b = Math.floor(b / shape[d]);
  }
  return idx;
}

/** float64 reference C and the per-element bound Σ|a||b| */
function reference(s: MatmulSpec, a: Float32Array, b: Float32Array): { c: Float64Array; mag: Float64Array } {
  const nb = prod(s.batchShape);
  const c = new Float64Array(nb * s.M * s.N);
  const mag = new Float64Array(c.length);
  for (let bi = 0; bi < nb; bi++) {
    const idx = unravel(bi, s.batchShape);
    const ao = s.a.offset + idx.reduce((acc, v, d) => acc + v * s.a.batchStrides[d], 0);
    const bo = s.b.offset + idx.reduce((acc, v, d) => acc + v * s.b.batchStrides[d], 0);
    for (let i = 0; i < s.M; i++)
      for (let j = 0; j < s.N; j++) {
        let acc = 0;
        let m = 0;
        for (let k = 0; k < s.K; k++) {
          const x = a[ao + i * s.a.rowStride + k * s.a.colStride];
          const y = b[bo + k * s.b.rowStride + j * s.b.colStride];
          acc += x * y;
          m += Math.abs(x * y);
        }
        c[(bi * s.M + i) * s.N + j] = acc;
        mag[(bi * s.M + i) * s.N + j] = m;
      }
  }
  return { c, mag };
}

const contiguous = (batch: readonly number[], rows: number, cols: number, offset = 0): MatmulOperand => {
  const strides: number[] = [];
  let st = rows * cols;
  for (let d = batch.length - 1; d >= 0; d--) {
    strides.unshift(st);
    st *= batch[d];
  }
  return { offset, batchStrides: strides, rowStride: cols, colStride: 1 };
};

interface Case {
  readonly name: string;
  readonly spec: MatmulSpec;
  /** tweak the target (e.g. a tiny per-dimension workgroup limit) */
  readonly target?: Partial<KernelTarget>;
  readonly epilogue?: { readonly wgsl: string; readonly f: (acc: number, b: number, i: number, j: number) => number };
  /** also run the workgroup-tiled kernel (slow to compile on lavapipe: only some cases) */
  readonly tiled?: boolean;
}

const plain = (M: number, N: number, K: number): MatmulSpec => ({ batchShape: [], M, N, K, a: contiguous([], M, K), b: contiguous([], K, N) });

const CASES: Case[] = [
  { name: "primes 7x13x5", spec: plain(7, 13, 5) },
  { name: "1x1x1", spec: plain(1, 1, 1) },
  { name: "M=1 (vector-matrix) 1x33x17", spec: plain(1, 33, 17) },
  { name: "N=1 (matrix-vector) 19x1x9", spec: plain(19, 1, 9) },
  { name: "K=1 (outer product) 10x12x1", spec: plain(10, 12, 1) },
  { name: "non-multiples of every tile 67x130x70", spec: plain(67, 130, 70), tiled: true },
  {
    name: "aligned vec4 paths, batch [2], 36x72x44",
    spec: { batchShape: [2], M: 36, N: 72, K: 44, a: contiguous([2], 36, 44), b: contiguous([2], 44, 72) },
    tiled: true,
  },
  {
    name: "transposed B (rowStride 1, colStride K) with offsets 23x17x29",
    spec: {
      batchShape: [],
      M: 23,
      N: 17,
      K: 29,
      a: { offset: 3, batchStrides: [], rowStride: 29, colStride: 1 },
      b: { offset: 5, batchStrides: [], rowStride: 1, colStride: 29 },
    },
  },
  {
    name: "transposed A, broadcast batch [3,2] (A stride 0 on dim 1, B stride 0 on dim 0) 9x11x6",
    spec: {
      batchShape: [3, 2],
      M: 9,
      N: 11,
      K: 6,
      // A[b0, i, k] transposed storage [3][K][M], broadcast over b1
      a: { offset: 0, batchStrides: [54, 0], rowStride: 1, colStride: 9 },
      // B[b1, k, j] contiguous [2][K][N], broadcast over b0
      b: { offset: 0, batchStrides: [0, 66], rowStride: 11, colStride: 1 },
    },
  },
  {
    // K a multiple of the k step, so the unmasked load path runs several k steps: the
    // weight-gradient shape (activations read transposed) that once used stride 1 for k
    name: "transposed A, K = 2 k-steps, unmasked 32x64x8",
    spec: { batchShape: [], M: 32, N: 64, K: 8, a: { offset: 0, batchStrides: [], rowStride: 1, colStride: 32 }, b: contiguous([], 8, 64) },
  },
  {
    name: "batch 37 with the grid folded into y and z (max 5 workgroups per dimension) 5x20x12",
    spec: { batchShape: [37], M: 5, N: 20, K: 12, a: contiguous([37], 5, 12), b: contiguous([37], 12, 20) },
    target: { maxWorkgroupsPerDim: 5 },
    tiled: true,
  },
  {
    name: "custom epilogue acc * 2.0 + f32(j) + 100.0 * f32(b) + 0.5 * f32(i), batch [2]",
    spec: { batchShape: [2], M: 13, N: 21, K: 19, a: contiguous([2], 13, 19), b: contiguous([2], 19, 21) },
    epilogue: {
      wgsl: "fn epilogue(acc: f32, b: u32, i: u32, j: u32) -> f32 { return acc * 2.0 + f32(j) + 100.0 * f32(b) + 0.5 * f32(i); }",
      f: (acc, b, i, j) => acc * 2 + j + 100 * b + 0.5 * i,
    },
    tiled: true,
  },
  {
    // the scores of 4-head attention over 65 tokens: blocks chosen for the awkward 65
    name: "attention-like [2,3] x 65x65x16, Q rows strided by heads, Kᵀ through strides",
    spec: {
      batchShape: [2, 3],
      M: 65,
      N: 65,
      K: 16,
      a: { offset: 0, batchStrides: [3120, 16], rowStride: 48, colStride: 1 },
      b: { offset: 0, batchStrides: [3120, 16], rowStride: 1, colStride: 48 },
    },
  },
  {
    // Kᵀ contiguous along k and aligned: the subgroup kernel reads a lane's column 4 k at a time (Bk4)
    name: "transposed B in vec4s along k (Bk4), offset 4, K = 3 k-steps, 37x29x12",
    spec: { batchShape: [], M: 37, N: 29, K: 12, a: contiguous([], 37, 12), b: { offset: 4, batchStrides: [], rowStride: 1, colStride: 12 } },
  },
  {
    name: "attention-like [2,3] x 65x16x65, P·V with V heads-strided (N = one head)",
    spec: {
      batchShape: [2, 3],
      M: 65,
      N: 16,
      K: 65,
      a: contiguous([2, 3], 65, 65),
      b: { offset: 0, batchStrides: [3120, 16], rowStride: 48, colStride: 1 },
    },
  },
  {
    name: "shared B folds the batch into rows: [5] x 13x11x8 (epilogue sees the original b, i)",
    spec: { batchShape: [5], M: 13, N: 11, K: 8, a: contiguous([5], 13, 8), b: { offset: 0, batchStrides: [0], rowStride: 11, colStride: 1 } },
    epilogue: {
      wgsl: "fn epilogue(acc: f32, b: u32, i: u32, j: u32) -> f32 { return acc + 100.0 * f32(b) + 0.5 * f32(i) + 0.25 * f32(j); }",
      f: (acc, b, i, j) => acc + 100 * b + 0.5 * i + 0.25 * j,
    },
  },
  {
    name: "partial fold: B per-example on dim 0, shared on dim 1, transposed B, [3,4] x 7x9x5",
    spec: {
      batchShape: [3, 4],
      M: 7,
      N: 9,
      K: 5,
      a: contiguous([3, 4], 7, 5),
      b: { offset: 2, batchStrides: [45, 0], rowStride: 1, colStride: 5 },
    },
    epilogue: {
      wgsl: "fn epilogue(acc: f32, b: u32, i: u32, j: u32) -> f32 { return acc + 10.0 * f32(b) + f32(i) * 0.125 - f32(j); }",
      f: (acc, b, i, j) => acc + 10 * b + i * 0.125 - j,
    },
  },
  {
    name: "M=1 per batch folds with A's batch stride as row stride: [6, 1] x 1x17x12",
    spec: {
      batchShape: [6, 1],
      M: 1,
      N: 17,
      K: 12,
      a: { offset: 1, batchStrides: [13, 99], rowStride: 0, colStride: 1 },
      b: { offset: 0, batchStrides: [0, 0], rowStride: 17, colStride: 1 },
    },
  },
];

/**
 * The variants to try for a case: every supported one, and the tiled kernel in its GPU
 * configuration too (tiled kernels only where the case asks: each costs lavapipe ~1-2 s
 * to compile).
 */
function variantsFor(spec: MatmulSpec, target: KernelTarget, tiled: boolean): { label: string; variant: MatmulVariant; target: KernelTarget }[] {
  const out: { label: string; variant: MatmulVariant; target: KernelTarget }[] = supportedVariants(spec, target)
    .filter((v) => tiled || v !== "tiled")
    .map((v) => ({ label: v, variant: v, target }));
  if (target.isFallback && tiled) {
    const gpuLike = { ...target, isFallback: false };
    if (supportedVariants(spec, gpuLike).includes("tiled")) out.push({ label: "tiled (GPU configuration)", variant: "tiled", target: gpuLike });
  }
  return out;
}

let gpu: Gpu | undefined;
let skip: string | false = false;

describe("generated matmul kernels vs float64 reference", () => {
  before(async () => {
    try {
      gpu = await acquireGpu();
    } catch (e) {
      skip = `no WebGPU adapter: ${(e as Error).message.split("\n")[0]} (install Mesa lavapipe: npm run setup)`;
    }
  });
  after(() => gpu?.destroy());

  it("generator: shapes, grids and variant choice are consistent", () => {
    const cpu: KernelTarget = {
      isFallback: true,
      subgroupSize: 8,
      subgroupMaxSize: 8,
      maxWorkgroupStorage: 32768,
      maxInvocations: 1024,
      maxWorkgroupsPerDim: 65535,
    };
    const big: MatmulSpec = { batchShape: [4096], M: 64, N: 64, K: 8, a: contiguous([4096], 64, 8), b: contiguous([4096], 8, 64) };
    for (const v of supportedVariants(big, cpu)) {
      const k = generateMatmul(big, cpu, { variant: v });
      assert.ok(
        k.workgroups.every((g) => g >= 1 && g <= 65535),
        `${v}: ${k.workgroups}`,
      );
    }
    assert.equal(generateMatmul(big, cpu).variant.split(" ")[0], "sg-buffer");
    // 4096 batches × K rows exceed the 8192-texel texture height: no texture variant
    assert.equal(generateMatmul(big, cpu, { allowTexture: true }).variant.split(" ")[0], "sg-buffer");
    const small = { ...big, batchShape: [4], a: contiguous([4], 64, 8), b: contiguous([4], 8, 64) };
    const tex = generateMatmul(small, cpu, { allowTexture: true });
    assert.equal(tex.variant.split(" ")[0], "sg-texture");
    assert.deepEqual([tex.bTexture?.width, tex.bTexture?.height], [16, 32]);
    const gpuT: KernelTarget = {
      isFallback: false,
      subgroupSize: 32,
      subgroupMaxSize: 32,
      maxWorkgroupStorage: 16384,
      maxInvocations: 256,
      maxWorkgroupsPerDim: 65535,
    };
    assert.equal(generateMatmul(big, gpuT).variant.split(" ")[0], "tiled");
    const tiny: KernelTarget = { isFallback: false, subgroupSize: 0, maxWorkgroupStorage: 0, maxInvocations: 64, maxWorkgroupsPerDim: 65535 };
    assert.equal(generateMatmul(big, tiny).variant, "simple");
    // the subgroup kernels need a known, fixed subgroup size
    assert.ok(!supportedVariants(big, { ...cpu, subgroupMaxSize: 16 }).includes("sg-buffer"));
    assert.throws(() => generateMatmul(big, tiny, { variant: "sg-buffer" }), /not available/);
    assert.throws(() => generateMatmul({ ...big, K: 0 }, cpu), /K must be/);
    assert.ok(generateMatmul(big, cpu).wgsl.includes("epilogue("));
  });

  it("generator: sg-buffer blocks fit awkward sizes, and a shared B folds the batch into rows", () => {
    const cpu: KernelTarget = {
      isFallback: true,
      subgroupSize: 8,
      subgroupMaxSize: 8,
      maxWorkgroupStorage: 32768,
      maxInvocations: 256,
      maxWorkgroupsPerDim: 65535,
    };
    /** computed outputs (whole tiles) per useful output */
    const padding = (s: MatmulSpec, variant: string): number => {
      const [tm, tn] = /s8 (\d+)x(\d+)x/.exec(variant)!.slice(1).map(Number);
      const rows = Number(/rows×(\d+)/.exec(variant)?.[1] ?? 1) * s.M;
      return (Math.ceil(rows / tm) * tm * Math.ceil(s.N / (8 * tn)) * 8 * tn) / (rows * s.N);
    };
    const qk: MatmulSpec = {
      batchShape: [64, 4],
      M: 65,
      N: 65,
      K: 16,
      a: { offset: 0, batchStrides: [4160, 16], rowStride: 64, colStride: 1 },
      b: { offset: 0, batchStrides: [4160, 16], rowStride: 1, colStride: 64 },
    };
    const pv: MatmulSpec = {
      batchShape: [64, 4],
      M: 65,
      N: 16,
      K: 65,
      a: contiguous([64, 4], 65, 65),
      b: { offset: 0, batchStrides: [4160, 16], rowStride: 64, colStride: 1 },
    };
    const prime: MatmulSpec = plain(67, 131, 70);
    for (const s of [qk, pv, prime]) {
      const v = generateMatmul(s, cpu).variant;
      assert.ok(padding(s, v) < 1.2, `${s.M}x${s.N}x${s.K}: ${v} pads ${padding(s, v).toFixed(2)}×`);
    }
    // [64] × 65 rows with a shared weight: one 4160-row matmul
    const fc: MatmulSpec = {
      batchShape: [64],
      M: 65,
      N: 256,
      K: 64,
      a: contiguous([64], 65, 64),
      b: { offset: 0, batchStrides: [0], rowStride: 1, colStride: 64 },
    };
    const k = generateMatmul(fc, cpu);
    assert.match(k.variant, /rows×64/);
    assert.ok(padding(fc, k.variant) < 1.02, k.variant);
    // Kᵀ: 4 k of a lane's column per vec4 load, unless told not to, or when unaligned
    assert.match(generateMatmul(qk, cpu).variant, / Bk4/);
    assert.doesNotMatch(generateMatmul(qk, cpu, { bkLoad: "lane" }).variant, /Bk4/);
    assert.doesNotMatch(generateMatmul({ ...qk, b: { ...qk.b, offset: 2 } }, cpu).variant, /Bk4/);
    assert.doesNotMatch(generateMatmul({ ...qk, K: 15 }, cpu).variant, /Bk4/);
    // pinned blocks are honoured; a tn that no B layout allows is refused
    assert.match(generateMatmul(qk, cpu, { tm: 16, tn: 8 }).variant, /16x8x4/);
    assert.throws(() => generateMatmul(qk, cpu, { tn: 6, bLoad: "lane4", variant: "sg-texture" }), /multiple of 4|not available/);
  });

  for (const c of CASES) {
    it(c.name, async (t) => {
      if (skip || !gpu) return t.skip(skip || "no device");
      const s = c.spec;
      const r = rng(s.M * 7919 + s.N * 104729 + s.K);
      const a = Float32Array.from({ length: extent(s.a, s.batchShape, s.M, s.K) }, r);
      const b = Float32Array.from({ length: extent(s.b, s.batchShape, s.K, s.N) }, r);
      const { c: ref, mag } = reference(s, a, b);
      const target = { ...targetFromGpu(gpu), ...c.target };
      for (const v of variantsFor(s, target, c.tiled ?? false)) {
        const t0 = performance.now();
        const kernel = generateMatmul(s, v.target, { variant: v.variant });
        const run = await createMatmulRun(gpu.device, kernel, { aElems: a.length, bElems: b.length, cElems: ref.length }, c.epilogue?.wgsl ?? DEFAULT_EPILOGUE);
        run.write(a, b);
        const out = await run.run();
        run.destroy();
        t.diagnostic(`${kernel.variant}: ${(performance.now() - t0).toFixed(0)} ms (compile + run)`);
        for (let e = 0; e < ref.length; e++) {
          const bi = Math.floor(e / (s.M * s.N));
          const i = Math.floor(e / s.N) % s.M;
          const j = e % s.N;
          const want = c.epilogue ? c.epilogue.f(ref[e], bi, i, j) : ref[e];
          const scale = c.epilogue ? 2 : 1;
          const tol = 1e-4 * scale * mag[e] + 1e-5 * Math.abs(want) + 1e-6;
          if (!(Math.abs(out[e] - want) <= tol))
            assert.fail(`${v.label} (${kernel.variant}), ${c.name}: C[${bi}, ${i}, ${j}] = ${out[e]}, want ${want} (tol ${tol.toExponential(2)})`);
        }
      }
    });
  }
});
