/**
 * Matmul kernel generators, specialised per adapter.
 *
 *   C[b, i, j] = epilogue(Σ_k A[b, i, k]·B[b, k, j], b, i, j)
 *
 * A and B are read through arbitrary element strides (a batch stride 0 broadcasts); C is
 * written contiguous [batch..., M, N]. Every size and stride is a compile-time constant:
 * one kernel per (spec, target).
 *
 * Bindings (group 0), all storage buffers unless noted:
 *   0  C  read_write, contiguous [batch..., M, N]
 *   1  A  read
 *   2  B  read; for variant "sg-texture" a texture_2d<f32> instead (see OperandTexture)
 *   3… whatever the caller's epilogue declares
 * A and B may be declared array<vec4<f32>> inside the kernel when their layout is
 * contiguous and 4-aligned along the loaded axis; the binding type is the same
 * (read-only storage). The caller appends
 * `fn epilogue(acc: f32, b: u32, i: u32, j: u32) -> f32` (b = flattened batch index, i/j
 * = row/column of C) and its bindings; DEFAULT_EPILOGUE stores the plain product. The
 * entry point is `main`; the kernel's own names start with `mm_` (plus `b`, `i`, `j`).
 *
 * Variants (chooseVariant picks by target; MatmulOptions.variant forces one, as does an
 * autotuned plan: kernels/matmul-tuning.ts, runtime/autotune.ts):
 *   sg-texture  CPU adapters (lavapipe) with a fixed subgroup size: no shared memory, a
 *               16×16-per-lane register block, A handed across the subgroup with
 *               subgroupBroadcast, B from an rgba32float texture. The fastest here; only
 *               with `allowTexture` (binding 2 changes type and the caller must fill it):
 *               plans allow it for constant B operands (lowering/plan.ts, PlanTexture).
 *   sg-buffer   the same with B from the storage buffer: the default on CPU adapters.
 *               Its register block is chosen per shape by estimated cost (chooseBlock).
 *   tiled       workgroup-shared tiles, 4×4 register blocks, vec4 loads where the layout
 *               allows: the shape real GPUs want (and CPU adapters without subgroups).
 *   simple      one output per invocation: correct everywhere, used when nothing fits.
 *
 * Before any variant, trailing batch dims over which B is shared fold into M
 * (foldBatchIntoRows): the epilogue still sees the original (b, i).
 *
 * Why the CPU variants look like this (../shared/notes/webgpu-on-cpu.md and the asm of
 * lavapipe's JIT): a subgroup is one SIMD vector; a storage load with a lane-dependent
 * index becomes a branchy per-lane loop; a texel fetch is a call into the sampler that
 * gathers 4 channels for all lanes (~3 instructions per value) but clobbers every vector
 * register; fma() compiles to mul + add; accumulators live in memory once they exceed the
 * 32 vector registers, and every loop-carried value pays a masked blend per iteration. So:
 * big blocks (loads amortised over many products), subgroupBroadcast from constant lanes
 * for A, texel or vec4 loads, all loads of a k-step first, then per accumulator all
 * products of the step, and the stores in a runtime loop (unrolled stores made lavapipe's
 * compile ~7× slower).
 */

import { loopEnd, type LoopTarget } from "./loop-end.ts";

export interface MatmulOperand {
  readonly offset: number;
  readonly batchStrides: readonly number[];
  readonly rowStride: number;
  readonly colStride: number;
  /** stored as f16 (a frozen weight, B only): read and widened to f32; offsets and strides stay in elements */
  readonly half?: boolean;
}

export interface MatmulSpec {
  /** output batch dims, may be [] */
  readonly batchShape: readonly number[];
  readonly M: number;
  readonly N: number;
  readonly K: number;
  /** A[b..., i, k] at offset + Σ b_d·batchStrides[d] + i·rowStride + k·colStride (f32 elements) */
  readonly a: MatmulOperand;
  /** B[b..., k, j] at offset + Σ b_d·batchStrides[d] + k·rowStride + j·colStride (f32 elements) */
  readonly b: MatmulOperand;
}

export interface KernelTarget extends LoopTarget {
  readonly isFallback: boolean;
  /** 0 without subgroups; otherwise the adapter's minimum subgroup size */
  readonly subgroupSize: number;
  readonly maxWorkgroupStorage: number;
  readonly maxInvocations: number;
  readonly maxWorkgroupsPerDim: number;
  /** the adapter's maximum subgroup size; the subgroup variants need it equal to subgroupSize */
  readonly subgroupMaxSize?: number;
  /** for the texture variant; assumed 8192 (the WebGPU default) when absent */
  readonly maxTextureDimension2D?: number;
}

export type MatmulVariant = "sg-texture" | "sg-buffer" | "tiled" | "simple";

export interface MatmulOptions {
  /** force a variant (throws if the target cannot run it) */
  readonly variant?: MatmulVariant;
  /** let the automatic choice pick "sg-texture" (the caller then binds a texture at 2) */
  readonly allowTexture?: boolean;
  /** sg-*: rows per subgroup (register block height); default 16, less for small M */
  readonly tm?: number;
  /** sg-*: columns per lane (register block width; a multiple of 4 with vec4/texel B); default 16 (texture) / 8 */
  readonly tn?: number;
  /** sg-*: k step; default 4 */
  readonly ku?: number;
  /** sg-*: "lane4" (default) loads A in vec4s along k where the layout allows, "lane" never */
  readonly aLoad?: "lane" | "lane4";
  /** sg-buffer: "lane4" (default) loads B in vec4s along n where the layout allows, "lane" never */
  readonly bLoad?: "lane" | "lane4";
  /**
   * sg-buffer with one column per lane ("lane" B loads): "k4" (default) loads 4 consecutive
   * k of a lane's column as one vec4 where B is contiguous along k (a Kᵀ operand: attention
   * scores, the FFN memory's x·Kᵀ), aligned, and K and the step multiples of 4; "lane" never
   */
  readonly bkLoad?: "lane" | "k4";
}

/**
 * Layout of B for "sg-texture": an rgba32float texture, `width` = ceil(N/4) texels,
 * `height` = batches·Kp rows where Kp is K rounded up to the kernel's k step. Texel
 * (x, bb·Kp + k) holds B[bb, k, 4x .. 4x+3], zero past N and for k >= K; bb enumerates only
 * B's non-broadcast batch dims (row-major), so a broadcast B is stored once. `fill` writes
 * the whole texture from B's strided buffer; its bindings are 0 =
 * texture_storage_2d<rgba32float, write>, 1 = B (read-only storage), and it needs usage
 * TEXTURE_BINDING | STORAGE_BINDING. (copyBufferToTexture would only do for a contiguous B
 * with N % 4 == 0, 256-byte-aligned rows and no padding, hence the kernel.) A constant B
 * (a weight) can be filled once and reused.
 */
export interface OperandTexture {
  /** rgba16float for an f16 operand: the copy keeps its precision and half its memory */
  readonly format: "rgba32float" | "rgba16float";
  readonly width: number;
  readonly height: number;
  readonly batches: number;
  readonly fill: { readonly wgsl: string; readonly workgroups: [number, number, number] };
}

export interface MatmulKernel {
  readonly wgsl: string;
  readonly workgroups: [number, number, number];
  readonly variant: string;
  /**
   * the kernel stores C in vec4s and calls `epilogue4(acc: vec4<f32>, b, i, j) -> vec4<f32>`
   * for columns j..j+3 (asked for with `vec4Epilogue` and possible: 4 columns per lane, N % 4 == 0)
   */
  readonly vec4Epilogue?: boolean;
  /** present iff variant is sg-texture */
  readonly bTexture?: OperandTexture;
}

export const DEFAULT_EPILOGUE = "fn epilogue(acc: f32, b: u32, i: u32, j: u32) -> f32 { return acc; }";

/**
 * Version of the code these generators emit and of what MatmulOptions mean. Autotuned
 * choices are cached per adapter under a key that includes it (runtime/autotune-cache.ts):
 * bump it with any change to the generated kernels or to chooseBlock/chooseVariant, so
 * timings of old code are never reused.
 */
export const MATMUL_GENERATOR_VERSION = 2;

// ---------------------------------------------------------------------------------------
// shared helpers

const u = (n: number): string => `${n}u`;

/** The WGSL element type of an operand's buffer: `vec`, read in vec4s. */
function operandType(op: MatmulOperand, vec: boolean): string {
  const e = op.half ? "f16" : "f32";
  return vec ? `vec4<${e}>` : e;
}

/** A load from an operand's buffer as f32 (`vec`: a vec4 load). */
function widened(op: MatmulOperand, load: string, vec: boolean): string {
  return op.half ? `${vec ? "vec4<f32>" : "f32"}(${load})` : load;
}

/** The module's first line when some operand is stored as f16. */
const enableF16 = (s: MatmulSpec): string[] => (s.b.half || s.a.half ? ["enable f16;"] : []);

function checkSpec(s: MatmulSpec): void {
  const nat = (v: number, what: string, min: number): void => {
    if (!Number.isInteger(v) || v < min) throw new RangeError(`matmul: ${what} must be an integer >= ${min}, got ${v}`);
  };
  nat(s.M, "M", 1);
  nat(s.N, "N", 1);
  nat(s.K, "K", 1);
  s.batchShape.forEach((d, i) => nat(d, `batchShape[${i}]`, 1));
  for (const [name, op] of [
    ["a", s.a],
    ["b", s.b],
  ] as const) {
    if (op.batchStrides.length !== s.batchShape.length)
      throw new RangeError(`matmul: ${name}.batchStrides has ${op.batchStrides.length} entries, batchShape ${s.batchShape.length}`);
    nat(op.offset, `${name}.offset`, 0);
    nat(op.rowStride, `${name}.rowStride`, 0);
    nat(op.colStride, `${name}.colStride`, 0);
    op.batchStrides.forEach((v, i) => nat(v, `${name}.batchStrides[${i}]`, 0));
  }
  const batch = s.batchShape.reduce((x, y) => x * y, 1);
  if (Math.max(operandExtent(s, "a"), operandExtent(s, "b")) > 2 ** 32 || batch * s.M * s.N >= 2 ** 32)
    throw new RangeError("matmul: an element index does not fit in u32");
}

/** Elements of its buffer an operand reaches (highest index + 1). */
export function operandExtent(s: MatmulSpec, which: "a" | "b"): number {
  const op = s[which];
  const [rows, cols] = which === "a" ? [s.M, s.K] : [s.K, s.N];
  return op.offset + (rows - 1) * op.rowStride + (cols - 1) * op.colStride + s.batchShape.reduce((acc, d, i) => acc + (d - 1) * op.batchStrides[i], 0) + 1;
}

const batchCount = (s: MatmulSpec): number => s.batchShape.reduce((x, y) => x * y, 1);

/**
 * WGSL statements that decode the flattened batch index `b` into the element offsets
 * `mm_aBase` and `mm_bBase` of the operands' [b] matrices.
 */
function batchBases(s: MatmulSpec, b: string, ind: string): string {
  const lines: string[] = [];
  const aTerms = [u(s.a.offset)];
  const bTerms = [u(s.b.offset)];
  let radix = 1;
  for (let d = s.batchShape.length - 1; d >= 0; d--) {
    const n = s.batchShape[d];
    if (n > 1 && (s.a.batchStrides[d] !== 0 || s.b.batchStrides[d] !== 0)) {
      const idx = radix === 1 ? `${b} % ${u(n)}` : d === 0 ? `${b} / ${u(radix)}` : `(${b} / ${u(radix)}) % ${u(n)}`;
      lines.push(`let mm_b${d} = ${idx};`);
      if (s.a.batchStrides[d] !== 0) aTerms.push(`mm_b${d} * ${u(s.a.batchStrides[d])}`);
      if (s.b.batchStrides[d] !== 0) bTerms.push(`mm_b${d} * ${u(s.b.batchStrides[d])}`);
    }
    radix *= n;
  }
  lines.push(`let mm_aBase = ${aTerms.join(" + ")};`, `let mm_bBase = ${bTerms.join(" + ")};`);
  return lines.map((l) => ind + l).join("\n");
}

/**
 * A grid of `tiles` workgroups within the per-dimension limit: x fastest. The kernel
 * recovers the linear tile index with `linearTile` (and returns past the end).
 */
function grid(tiles: number, maxPerDim: number): { workgroups: [number, number, number]; exact: boolean } {
  const gx = Math.min(tiles, maxPerDim);
  const gy = Math.min(Math.ceil(tiles / gx), maxPerDim);
  const gz = Math.ceil(tiles / (gx * gy));
  if (gz > maxPerDim) throw new RangeError(`matmul: ${tiles} workgroups do not fit a ${maxPerDim}³ grid`);
  return { workgroups: [gx, gy, gz], exact: gx * gy * gz === tiles };
}

function linearTile(wg: [number, number, number]): string {
  const [gx, gy, gz] = wg;
  let e = "mm_wid.x";
  if (gy > 1) e += ` + mm_wid.y * ${u(gx)}`;
  if (gz > 1) e += ` + mm_wid.z * ${u(gx * gy)}`;
  return e;
}

function fitsTexture(s: MatmulSpec, t: KernelTarget, ku = 4): boolean {
  const maxDim = t.maxTextureDimension2D ?? 8192;
  const batches = texBatchDims(s, s.b).reduce((x, d) => x * s.batchShape[d], 1);
  return Math.ceil(s.N / 4) <= maxDim && batches * Math.ceil(s.K / ku) * ku <= maxDim;
}

/** The subgroup kernels need one fixed, power-of-two subgroup size that fits a workgroup. */
export function subgroupsUsable(t: KernelTarget): boolean {
  const S = t.subgroupSize;
  return S >= 4 && (S & (S - 1)) === 0 && (t.subgroupMaxSize === undefined || t.subgroupMaxSize === S) && S <= t.maxInvocations;
}

export function supportedVariants(s: MatmulSpec, t: KernelTarget, ku?: number): MatmulVariant[] {
  const v: MatmulVariant[] = [];
  if (subgroupsUsable(t)) {
    if (fitsTexture(s, t, ku)) v.push("sg-texture");
    v.push("sg-buffer");
  }
  if (tiledConfig(t)) v.push("tiled");
  v.push("simple");
  return v;
}

export function chooseVariant(s: MatmulSpec, t: KernelTarget, allowTexture = false, ku?: number): MatmulVariant {
  const v = supportedVariants(s, t, ku);
  if (t.isFallback) {
    if (allowTexture && v.includes("sg-texture")) return "sg-texture";
    if (v.includes("sg-buffer")) return "sg-buffer";
  }
  return v.includes("tiled") ? "tiled" : "simple";
}

/** The spec as the variants see it (batch folded into rows) and the variant to generate. */
function resolve(spec: MatmulSpec, target: KernelTarget, opts: MatmulOptions): { s: MatmulSpec; folded: number; variant: MatmulVariant } {
  checkSpec(spec);
  const { spec: s, folded } = foldBatchIntoRows(spec);
  const variant = opts.variant ?? chooseVariant(s, target, opts.allowTexture, opts.ku);
  if (!supportedVariants(s, target, opts.ku).includes(variant))
    throw new Error(`matmul: variant ${variant} is not available on this target for ${spec.M}x${spec.N}x${spec.K}`);
  return { s, folded, variant };
}

/**
 * `opts` with every choice the generator would make spelled out (variant, and for the
 * subgroup variants the register block, k step and load widths): generating with the
 * result gives the same kernel, and an autotuner varies it one field at a time.
 */
export function resolveMatmulOptions(spec: MatmulSpec, target: KernelTarget, opts: MatmulOptions = {}): MatmulOptions {
  const { s, variant } = resolve(spec, target, opts);
  if (variant !== "sg-buffer" && variant !== "sg-texture") return { variant };
  const b = sgBlock(s, target, variant === "sg-texture", opts);
  return {
    variant,
    tm: b.TM,
    tn: b.TN,
    ku: b.KU,
    aLoad: opts.aLoad ?? "lane4",
    bLoad: b.V === 4 ? "lane4" : "lane",
    ...(variant === "sg-buffer" ? { bkLoad: b.bK4 ? "k4" : "lane" } : {}),
  };
}

export function generateMatmul(spec: MatmulSpec, target: KernelTarget, opts: MatmulOptions = {}, vec4Epilogue = false): MatmulKernel {
  const { s, folded, variant } = resolve(spec, target, opts);
  // the generators call `epi` with the folded (b, i); the wrapper hands the caller's
  // epilogue the original ones
  const epi = folded > 1 ? "mm_epilogue" : "epilogue";
  const k = ((): MatmulKernel => {
    switch (variant) {
      case "sg-texture":
      case "sg-buffer":
        return subgroupMatmul(s, target, variant === "sg-texture", opts, epi, vec4Epilogue);
      case "tiled":
        return tiledMatmul(s, target, tiledConfig(target)!, epi);
      case "simple":
        return simpleMatmul(s, target, epi);
    }
  })();
  if (folded === 1) return k;
  const wrapper = k.vec4Epilogue
    ? `fn mm_epilogue4(acc: vec4<f32>, b: u32, i: u32, j: u32) -> vec4<f32> { return epilogue4(acc, b * ${u(folded)} + i / ${u(spec.M)}, i % ${u(spec.M)}, j); }`
    : `fn mm_epilogue(acc: f32, b: u32, i: u32, j: u32) -> f32 { return epilogue(acc, b * ${u(folded)} + i / ${u(spec.M)}, i % ${u(spec.M)}, j); }`;
  return { ...k, wgsl: `${k.wgsl}\n${wrapper}\n`, variant: `${k.variant} rows×${folded}` };
}

/**
 * Trailing batch dims over which B is broadcast and A's rows continue contiguously
 * (a shared weight applied to [batch, M, K] activations) fold into M: one (batch·M)×K
 * matmul instead of `batch` small ones. C is contiguous [batch..., M, N], so its layout
 * is unchanged; small M (65 tokens, 40 positions) otherwise wastes most of the last
 * row tile of every batch and pays per-batch setup. `folded` is the product of the
 * folded dims (1: none).
 */
function foldBatchIntoRows(s: MatmulSpec): { spec: MatmulSpec; folded: number } {
  let M = s.M;
  // with one row, A's row stride is free: the first folded dim's stride becomes it
  let rowStride: number | undefined = s.M === 1 ? undefined : s.a.rowStride;
  let d = s.batchShape.length;
  for (; d > 0; d--) {
    const n = s.batchShape[d - 1];
    const as = s.a.batchStrides[d - 1];
    if (n === 1) continue;
    if (s.b.batchStrides[d - 1] !== 0) break;
    if (rowStride === undefined) rowStride = as;
    else if (as !== M * rowStride) break;
    M *= n;
  }
  const folded = M / s.M;
  if (folded === 1) return { spec: s, folded };
  const keep = <T>(v: readonly T[]): T[] => v.slice(0, d);
  return {
    spec: {
      batchShape: keep(s.batchShape),
      M,
      N: s.N,
      K: s.K,
      a: { ...s.a, batchStrides: keep(s.a.batchStrides), rowStride: rowStride! },
      b: { ...s.b, batchStrides: keep(s.b.batchStrides) },
    },
    folded,
  };
}

// ---------------------------------------------------------------------------------------
// sg-buffer / sg-texture: CPU adapters

/** The subgroup kernels' shape: register block TM × TN, k step KU, A and B load widths. */
function sgBlock(
  s: MatmulSpec,
  t: KernelTarget,
  texture: boolean,
  o: MatmulOptions,
): { TM: number; TN: number; V: number; KU: number; aVec: boolean; bK4: boolean } {
  const S = t.subgroupSize;
  const { M, N, K } = s;
  const aligned4 = (op: MatmulOperand, stride: number): boolean =>
    op.colStride === 1 && op.offset % 4 === 0 && stride % 4 === 0 && op.batchStrides.every((x) => x % 4 === 0);
  const KU = o.ku ?? 4;
  // A in vec4s along k: contiguous, aligned, K and the step multiples of 4
  const aVec = (o.aLoad ?? "lane4") === "lane4" && aligned4(s.a, s.a.rowStride) && K % 4 === 0 && KU % 4 === 0;
  // B in vec4s along n: always with the texture; from the buffer where the layout allows,
  // unless o.bLoad says otherwise (unset: the block choice decides, see chooseBlock)
  const bVecOk = aligned4(s.b, s.b.rowStride) && N % 4 === 0;
  const vecs = texture ? [4] : !bVecOk || o.bLoad === "lane" ? [1] : o.bLoad === "lane4" ? [4] : [4, 1];
  const pow2 = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
  // the texture keeps its measured 16×16 block (shrunk for small M and N): chooseBlock's
  // costs are those of buffer loads
  const {
    tm: TM,
    tn: TN,
    v: V,
  } = texture
    ? { tm: o.tm ?? Math.min(16, pow2(M)), tn: o.tn ?? Math.max(4, Math.min(16, Math.ceil(Math.ceil(N / S) / 4) * 4)), v: 4 }
    : chooseBlock({ M, N, K, batches: batchCount(s), S, KU, aw: aVec ? 4 : 1, vecs, tm: o.tm, tn: o.tn });
  if (TN % V !== 0) throw new RangeError(`matmul ${texture ? "sg-texture" : "sg-buffer"}: tn must be a multiple of ${V}`);
  // B in vec4s along k, one column per lane: B's rows are k, so k-contiguous means rowStride 1
  const B = s.b;
  const bK4 =
    !texture &&
    V === 1 &&
    (o.bkLoad ?? "k4") === "k4" &&
    B.rowStride === 1 &&
    B.offset % 4 === 0 &&
    B.colStride % 4 === 0 &&
    B.batchStrides.every((x) => x % 4 === 0) &&
    K % 4 === 0 &&
    KU % 4 === 0;
  return { TM, TN, V, KU, aVec, bK4 };
}

/**
 * One workgroup = one subgroup of S lanes computing a TM × (S·TN) block of C: all lanes
 * share the block's TM rows, each lane owns TN columns (TM·TN accumulators per lane).
 *
 * Per step of KU values of k:
 * - A: the TM·KU values are loaded once across the subgroup, in groups of 1 or 4
 *   consecutive k of one row (a vec4 when A is contiguous along k), and handed to every
 *   lane with subgroupBroadcast from a constant lane;
 * - B: each lane fetches its KU·TN values: texels (4 columns each) from the texture, or
 *   vec4/f32 loads from the buffer;
 * - all loads come first, then the products, grouped per accumulator
 *   (acc += a₀b₀ + a₁b₁ + …): texel fetches are calls into lavapipe's sampler that clobber
 *   every vector register, per-lane buffer loads are branches, and TM·TN accumulators do
 *   not fit in registers, so each accumulator is loaded and stored once per step instead
 *   of once per product.
 * Loads use clamped indices (no branches in the loop); rows and columns past the edge are
 * dropped at the store. The workgroup is exactly one subgroup, so lane = the subgroup
 * invocation id, with no assumption on how invocations map to subgroups.
 */
function subgroupMatmul(s: MatmulSpec, t: KernelTarget, texture: boolean, o: MatmulOptions, epi: string, vec4Epilogue = false): MatmulKernel {
  const S = t.subgroupSize;
  const { M, N, K } = s;
  const A = s.a;
  const B = s.b;
  const { TM, TN, V, KU, aVec, bK4 } = sgBlock(s, t, texture, o);
  const bVec = V === 4; // a lane's columns come in groups of V, interleaved across lanes
  const BN = S * TN;
  const nTilesN = Math.ceil(N / BN);
  const nTilesM = Math.ceil(M / TM);
  const tiles = nTilesN * nTilesM * batchCount(s);
  const g = grid(tiles, t.maxWorkgroupsPerDim);
  const L: string[] = [];
  const ind = "  ";

  L.push(...enableF16(s), "enable subgroups;", "");
  // C in vec4s: a lane's columns come in runs of 4 starting at multiples of 4
  const cVec = vec4Epilogue && V === 4 && N % 4 === 0;
  L.push(`@group(0) @binding(0) var<storage, read_write> C: array<${cVec ? "vec4<f32>" : "f32"}>;`);
  L.push(`@group(0) @binding(1) var<storage, read> A: array<${operandType(A, aVec)}>;`);
  L.push(texture ? "@group(0) @binding(2) var B: texture_2d<f32>;" : `@group(0) @binding(2) var<storage, read> B: array<${operandType(B, bVec || bK4)}>;`);
  L.push("");
  L.push(`@compute @workgroup_size(${S})`);
  L.push("fn main(@builtin(workgroup_id) mm_wid: vec3<u32>, @builtin(subgroup_invocation_id) mm_lane: u32) {");
  L.push(`${ind}let mm_t = ${linearTile(g.workgroups)};`);
  // the whole workgroup (= subgroup) leaves together: subgroup operations stay uniform
  if (!g.exact) L.push(`${ind}if (mm_t >= ${u(tiles)}) { return; }`);
  L.push(`${ind}let mm_tn = mm_t % ${u(nTilesN)};`);
  L.push(`${ind}let mm_tm = (mm_t / ${u(nTilesN)}) % ${u(nTilesM)};`);
  L.push(`${ind}let b = mm_t / ${u(nTilesN * nTilesM)};`);
  L.push(batchBases(s, "b", ind));
  L.push(`${ind}let mm_row0 = mm_tm * ${u(TM)};`);
  L.push(`${ind}let mm_col0 = mm_tn * ${u(BN)} + mm_lane * ${u(V)};`);
  /** this lane's c-th column */
  const colOf = (c: number): string => {
    const off = Math.floor(c / V) * S * V + (c % V);
    return off === 0 ? "mm_col0" : `mm_col0 + ${u(off)}`;
  };
  // per-lane B addressing (clamped): texel x / vec4 index / element index of row k = 0
  if (texture) {
    L.push(`${ind}let mm_trow = i32(${texRowBase(s, B, Math.ceil(K / KU) * KU)});`);
    for (let c = 0; c < TN; c += 4) L.push(`${ind}let mm_bx${c / 4} = i32(min((${colOf(c)}) / 4u, ${u(Math.ceil(N / 4) - 1)}));`);
  } else if (bVec) {
    for (let c = 0; c < TN; c += 4) L.push(`${ind}let mm_bp${c / 4} = (mm_bBase + min(${colOf(c)}, ${u(N - 4)})) / 4u;`);
  } else {
    for (let c = 0; c < TN; c++)
      L.push(`${ind}let mm_bp${c} = ${bK4 ? "(" : ""}mm_bBase + min(${colOf(c)}, ${u(N - 1)}) * ${u(B.colStride)}${bK4 ? ") / 4u" : ""};`);
  }
  for (let r = 0; r < TM; r++) for (let c = 0; c < TN; c++) L.push(`${ind}var mm_acc${r}_${c} = 0.0;`);

  // one loop over k in steps of KU up to Kp = K rounded up; when K % KU != 0 the loads of
  // k >= K read clamped addresses and are zeroed (the texture is zero-padded to Kp rows)
  const Kp = Math.ceil(K / KU) * KU;
  const masked = Kp !== K;
  // A: TM·KU values in groups of aw consecutive k of one row; group q = kq·TM + r is loaded
  // by lane q % S into register q / S (lanes past the end load a duplicate)
  const aw = aVec ? 4 : 1;
  const groups = (TM * KU) / aw;
  const P = Math.ceil(groups / S);
  for (let p = 0; p < P; p++) {
    L.push(`${ind}let mm_q${p} = min(mm_lane + ${u(S * p)}, ${u(groups - 1)});`);
    L.push(`${ind}let mm_ak${p} = (mm_q${p} / ${u(TM)}) * ${u(aw)};`);
    L.push(`${ind}let mm_ap${p} = mm_aBase + min(mm_row0 + mm_q${p} % ${u(TM)}, ${u(M - 1)}) * ${u(A.rowStride)};`);
  }
  const aLoad = (p: number): string => {
    const k = `mm_k + mm_ak${p}`;
    if (aw === 4) {
      // K % 4 == 0 here: a quad is wholly in or out of range
      const v = widened(A, `A[(mm_ap${p} + min(${k}, ${u(K - 4)})) / 4u]`, true);
      return masked ? `select(vec4<f32>(0.0), ${v}, ${k} < ${u(K)})` : v;
    }
    const v = widened(A, `A[mm_ap${p} + ${masked ? `min(${k}, ${u(K - 1)})` : `(${k})`} * ${u(A.colStride)}]`, false);
    return masked ? `select(0.0, ${v}, ${k} < ${u(K)})` : v;
  };
  const aVal = (uu: number, r: number): string => {
    const q = Math.floor(uu / aw) * TM + r;
    return `subgroupBroadcast(mm_av${Math.floor(q / S)}${aw === 4 ? `.${"xyzw"[uu % 4]}` : ""}, ${u(q % S)})`;
  };
  const bVal = (uu: number, c: number): string =>
    bVec ? `mm_bt${uu}_${c >> 2}.${"xyzw"[c & 3]}` : bK4 ? `mm_bq${uu >> 2}_${c}.${"xyzw"[uu & 3]}` : `mm_bv${uu}_${c}`;
  const i2 = ind + "  ";
  L.push(`${ind}for (var mm_k = 0u; mm_k < ${loopEnd(Kp, t, "C")}; mm_k += ${u(KU)}) {`);
  for (let p = 0; p < P; p++) L.push(`${i2}let mm_av${p} = ${aLoad(p)};`);
  for (let uu = 0; uu < KU; uu++) {
    const kk = uu === 0 ? "mm_k" : `mm_k + ${u(uu)}`;
    // buffer B: clamped row, zeroed past K (k is uniform: a scalar select)
    const bk = masked ? `min(${kk}, ${u(K - 1)})` : `(${kk})`;
    const zero = (v: string, z: string): string => (masked ? `select(${z}, ${v}, ${kk} < ${u(K)})` : v);
    for (let c = 0; c < TN; c += V) {
      // k4: the column's 4 values of k at a multiple of 4 in one vec4 (K % 4 == 0: no masking)
      if (bK4) {
        if (uu % 4 === 0) L.push(`${i2}let mm_bq${uu / 4}_${c} = ${widened(B, `B[mm_bp${c} + mm_k / 4u${uu ? ` + ${u(uu / 4)}` : ""}]`, true)};`);
        continue;
      }
      if (texture) L.push(`${i2}let mm_bt${uu}_${c / 4} = textureLoad(B, vec2<i32>(mm_bx${c / 4}, mm_trow + i32(${kk})), 0);`);
      else if (bVec) L.push(`${i2}let mm_bt${uu}_${c / 4} = ${zero(widened(B, `B[mm_bp${c / 4} + ${bk} * ${u(B.rowStride / 4)}]`, true), "vec4<f32>(0.0)")};`);
      else L.push(`${i2}let mm_bv${uu}_${c} = ${zero(widened(B, `B[mm_bp${c} + ${bk} * ${u(B.rowStride)}]`, false), "0.0")};`);
    }
  }
  for (let r = 0; r < TM; r++) {
    for (let uu = 0; uu < KU; uu++) L.push(`${i2}let mm_a${uu}_${r} = ${aVal(uu, r)};`);
    for (let c = 0; c < TN; c++) {
      const terms = Array.from({ length: KU }, (_, uu) => `mm_a${uu}_${r} * ${bVal(uu, c)}`);
      L.push(`${i2}mm_acc${r}_${c} = mm_acc${r}_${c} + ${terms.join(" + ")};`);
    }
  }
  L.push(`${ind}}`);

  // store through one runtime loop over the block (not TM·TN unrolled stores: a store is
  // a per-lane scatter plus the caller's epilogue, and unrolling them all multiplies
  // lavapipe's compile time several-fold); rows and columns past the edge are dropped
  if (cVec) {
    // one vec4 per run of 4 columns: j < N covers all 4 (N and j multiples of 4)
    const G = TN / 4;
    L.push(`${ind}var mm_out: array<vec4<f32>, ${TM * G}>;`);
    for (let r = 0; r < TM; r++)
      for (let q = 0; q < G; q++) L.push(`${ind}mm_out[${r * G + q}] = vec4<f32>(${[0, 1, 2, 3].map((x) => `mm_acc${r}_${4 * q + x}`).join(", ")});`);
    L.push(`${ind}for (var mm_e = 0u; mm_e < ${loopEnd(TM * G, t, "C")}; mm_e++) {`);
    L.push(`${ind}  let i = mm_row0 + mm_e / ${u(G)};`);
    L.push(`${ind}  let j = mm_col0 + (mm_e % ${u(G)}) * ${u(S * 4)};`);
    L.push(`${ind}  if (i < ${u(M)} && j < ${u(N)}) { C[(b * ${u(M * N)} + i * ${u(N)} + j) / 4u] = ${epi}4(mm_out[mm_e], b, i, j); }`);
    L.push(`${ind}}`);
  } else {
    L.push(`${ind}var mm_out: array<f32, ${TM * TN}>;`);
    for (let r = 0; r < TM; r++) for (let c = 0; c < TN; c++) L.push(`${ind}mm_out[${r * TN + c}] = mm_acc${r}_${c};`);
    L.push(`${ind}for (var mm_e = 0u; mm_e < ${loopEnd(TM * TN, t, "C")}; mm_e++) {`);
    L.push(`${ind}  let i = mm_row0 + mm_e / ${u(TN)};`);
    L.push(`${ind}  let mm_c = mm_e % ${u(TN)};`);
    L.push(`${ind}  let j = mm_col0 + ${V === 1 ? `mm_c * ${u(S)}` : `(mm_c / ${u(V)}) * ${u(S * V)} + mm_c % ${u(V)}`};`);
    L.push(`${ind}  if (i < ${u(M)} && j < ${u(N)}) { C[b * ${u(M * N)} + i * ${u(N)} + j] = ${epi}(mm_out[mm_e], b, i, j); }`);
    L.push(`${ind}}`);
  }
  L.push("}", "");
  const tags = `${aVec ? " A4" : ""}${!texture && bVec ? " B4" : ""}${bK4 ? " Bk4" : ""}${cVec ? " C4" : ""}`;
  return {
    ...(cVec ? { vec4Epilogue: true } : {}),
    wgsl: L.join("\n"),
    workgroups: g.workgroups,
    variant: `${texture ? "sg-texture" : "sg-buffer"} s${S} ${TM}x${TN}x${KU}${tags}`,
    ...(texture ? { bTexture: operandTexture(s, t, B, K, N, Kp) } : {}),
  };
}

/**
 * The sg-buffer register block (TM rows × TN columns per lane, B in groups of V columns)
 * with the least estimated cost. Awkward sizes are common (65 tokens, 16-wide heads,
 * batched attention): a fixed 16×8 block computes 80×128 outputs for a 65×65 product,
 * 2.4× the useful work, so the estimate counts whole tiles. Per lane and k, in rough
 * instruction units fitted to lavapipe timings at s8 (960², 65- and 16-sized operands;
 * the fit is within the ±25% noise of the shared host, so only the coarse shape counts):
 * an FMA 2 (mul + add), a per-lane load 40 for an f32 or 50 for a vec4 of B (lavapipe
 * splits them into per-lane scalar loads), A's loads likewise but shared by the subgroup,
 * a broadcast 1, and 4 per value once accumulators plus the step's B values exceed ~128
 * (they spill); per tile, each output's store and epilogue 8 plus a fixed 100. That
 * favours one vec4 of B per lane and tall blocks (24×4 measured ~40 GF/s against 33 for
 * 16×8), few B values with scalar B, and exact fits for small dims. `tm`/`tn` pin one.
 */
function chooseBlock(p: {
  M: number;
  N: number;
  K: number;
  batches: number;
  S: number;
  KU: number;
  aw: number;
  vecs: readonly number[];
  tm?: number;
  tn?: number;
}): { tm: number; tn: number; v: number } {
  const range = (fixed: number | undefined, max: number): number[] => (fixed !== undefined ? [fixed] : Array.from({ length: max }, (_, i) => i + 1));
  let best = { tm: 0, tn: 0, v: 0, cost: Infinity };
  for (const v of p.vecs)
    for (const tm of range(p.tm, Math.min(32, p.M)))
      for (const tn of range(p.tn, 16)) {
        if (tn % v !== 0) continue;
        const acc = tm * tn;
        const tiles = p.batches * Math.ceil(p.M / tm) * Math.ceil(p.N / (p.S * tn));
        const aLoads = Math.ceil((tm * p.KU) / p.aw / p.S) / p.KU;
        const perK = 2 * acc + (v === 4 ? 50 : 40) * (tn / v) + 40 * aLoads + tm + 4 * Math.max(0, acc + p.KU * tn - 128);
        // fewer tiles than a few per core leave cores idle: count at least 8
        const cost = Math.max(tiles, 8) * (Math.ceil(p.K / p.KU) * p.KU * perK + 8 * acc + 100);
        if (cost < best.cost) best = { tm, tn, v, cost };
      }
  if (!best.v) throw new RangeError(`matmul sg-buffer: tn must be a multiple of ${p.vecs.join(" or ")}`);
  return best;
}

/** An operand's non-broadcast batch dims: the texture stores one matrix per combination. */
function texBatchDims(s: MatmulSpec, op: MatmulOperand): number[] {
  return s.batchShape.map((_, d) => d).filter((d) => s.batchShape[d] > 1 && op.batchStrides[d] !== 0);
}

/** WGSL (u32) of the first texture row of this workgroup's batch (uses `mm_b<d>` from batchBases) */
function texRowBase(s: MatmulSpec, op: MatmulOperand, rows: number): string {
  const bd = texBatchDims(s, op);
  if (!bd.length) return "0u";
  let radix = 1;
  const terms: string[] = [];
  for (let i = bd.length - 1; i >= 0; i--) {
    terms.push(radix === 1 ? `mm_b${bd[i]}` : `mm_b${bd[i]} * ${u(radix)}`);
    radix *= s.batchShape[bd[i]];
  }
  return `(${terms.join(" + ")}) * ${u(rows)}`;
}

/**
 * Texture layout of a strided operand X[b..., r, c] (rows × cols): texel (x, bb·rows + r)
 * holds X[bb, r, 4x .. 4x+3], zero past `cols`; bb enumerates X's non-broadcast batch dims.
 */
function operandTexture(s: MatmulSpec, t: KernelTarget, op: MatmulOperand, rows: number, cols: number, paddedRows = rows): OperandTexture {
  const bd = texBatchDims(s, op);
  const batches = bd.reduce((x, d) => x * s.batchShape[d], 1);
  const W = Math.ceil(cols / 4);
  const H = batches * paddedRows;
  const g = grid(Math.ceil((W * H) / 64), t.maxWorkgroupsPerDim);
  // decode bb (row-major over bd) into the operand's element offset
  const terms = [u(op.offset)];
  let radix = 1;
  for (let i = bd.length - 1; i >= 0; i--) {
    const n = s.batchShape[bd[i]];
    const idx = radix === 1 ? `bb % ${u(n)}` : i === 0 ? `bb / ${u(radix)}` : `(bb / ${u(radix)}) % ${u(n)}`;
    terms.push(`(${idx}) * ${u(op.batchStrides[bd[i]])}`);
    radix *= n;
  }
  const format = op.half ? "rgba16float" : "rgba32float";
  const wgsl = [
    ...enableF16({ ...s, a: op, b: op }),
    `@group(0) @binding(0) var T: texture_storage_2d<${format}, write>;`,
    `@group(0) @binding(1) var<storage, read> X: array<${operandType(op, false)}>;`,
    "",
    "@compute @workgroup_size(64)",
    "fn main(@builtin(workgroup_id) mm_wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {",
    `  let t = (${linearTile(g.workgroups)}) * 64u + li;`,
    `  if (t >= ${u(W * H)}) { return; }`,
    `  let x = t % ${u(W)};`,
    `  let y = t / ${u(W)};`,
    `  let bb = y / ${u(paddedRows)};`,
    `  let r = y % ${u(paddedRows)};`,
    `  let base = ${terms.join(" + ")} + min(r, ${u(rows - 1)}) * ${u(op.rowStride)};`,
    "  var v = vec4<f32>(0.0);",
    "  for (var c = 0u; c < 4u; c++) {",
    "    let j = x * 4u + c;",
    `    if (r < ${u(rows)} && j < ${u(cols)}) { v[c] = ${widened(op, `X[base + j * ${u(op.colStride)}]`, false)}; }`,
    "  }",
    "  textureStore(T, vec2<u32>(x, y), v);",
    "}",
    "",
  ].join("\n");
  return { format, width: W, height: H, batches, fill: { wgsl, workgroups: g.workgroups } };
}

// ---------------------------------------------------------------------------------------
// tiled: workgroup-shared tiles

interface TiledConfig {
  /** threads per workgroup along N (x) and M (y) */
  readonly tx: number;
  readonly ty: number;
  /** register block per thread: rows, columns (columns a multiple of 4) */
  readonly rm: number;
  readonly rn: number;
  /** k depth of a shared tile */
  readonly bk: number;
}

function tiledConfig(t: KernelTarget): TiledConfig | undefined {
  // CPU adapters without subgroups: fewer invocations, bigger register blocks (notes: 8×8
  // blocks 2.3× faster than 4×4 on lavapipe; bk 4 keeps lavapipe's compile under ~2 s).
  // GPUs: 256 invocations with 4×4 blocks, 64×64 tiles.
  const candidates: TiledConfig[] = t.isFallback
    ? [{ tx: 8, ty: 8, rm: 8, rn: 8, bk: 4 }]
    : [
        { tx: 16, ty: 16, rm: 4, rn: 4, bk: 8 },
        { tx: 8, ty: 8, rm: 4, rn: 4, bk: 8 },
      ];
  for (const c of candidates) {
    const bytes = 4 * c.bk * (c.ty * c.rm + c.tx * c.rn);
    if (c.tx * c.ty <= t.maxInvocations && bytes <= t.maxWorkgroupStorage) return c;
  }
  return undefined;
}

/**
 * Workgroup tile BM × BN = (ty·rm) × (tx·rn), k in steps of bk through shared memory.
 * Shared A is row-major in vec4s along k (As[m][k/4]), shared B k-major in vec4s along n
 * (Bs[k][n/4]); every shared write is a whole vec4. Global loads are vec4 when the operand
 * is contiguous along the loaded axis and 4-aligned (A along k, B along n), otherwise four
 * scalar loads. Out-of-range k is zero-filled, out-of-range rows/columns are clamped on
 * load and dropped on store. Thread (x, y) owns rows y + ty·r and column quads x + tx·c:
 * within a warp, A reads broadcast and B reads are consecutive vec4s.
 */
function tiledMatmul(s: MatmulSpec, t: KernelTarget, c: TiledConfig, epi: string): MatmulKernel {
  const { tx, ty, rm, rn, bk } = c;
  const { M, N, K } = s;
  const A = s.a;
  const B = s.b;
  const BM = ty * rm;
  const BN = tx * rn;
  const NT = tx * ty;
  const KQ = bk / 4;
  const nTilesN = Math.ceil(N / BN);
  const nTilesM = Math.ceil(M / BM);
  const tiles = nTilesN * nTilesM * batchCount(s);
  const g = grid(tiles, t.maxWorkgroupsPerDim);
  const aligned = (op: MatmulOperand, stride: number): boolean => op.offset % 4 === 0 && stride % 4 === 0 && op.batchStrides.every((x) => x % 4 === 0);
  // vec4 loads: A along k needs K % 4 == 0 (a quad is wholly in or out of range)
  const aVec = A.colStride === 1 && K % 4 === 0 && aligned(A, A.rowStride);
  const bVec = B.colStride === 1 && N % 4 === 0 && aligned(B, B.rowStride);
  const L: string[] = [];
  const ind = "  ";
  const i2 = "    ";
  L.push(...enableF16(s));
  L.push("@group(0) @binding(0) var<storage, read_write> C: array<f32>;");
  L.push(`@group(0) @binding(1) var<storage, read> A: array<${operandType(A, aVec)}>;`);
  L.push(`@group(0) @binding(2) var<storage, read> B: array<${operandType(B, bVec)}>;`);
  L.push(`var<workgroup> mm_As: array<vec4<f32>, ${BM * KQ}>;`);
  L.push(`var<workgroup> mm_Bs: array<vec4<f32>, ${(bk * BN) / 4}>;`);
  L.push("");
  L.push(`@compute @workgroup_size(${tx}, ${ty})`);
  L.push("fn main(@builtin(workgroup_id) mm_wid: vec3<u32>, @builtin(local_invocation_id) mm_lid: vec3<u32>, @builtin(local_invocation_index) mm_li: u32) {");
  L.push(`${ind}let mm_t = ${linearTile(g.workgroups)};`);
  // no early return before the barriers: past-the-end tiles (grid padding) compute on
  // clamped data and store nothing
  L.push(`${ind}let mm_valid = mm_t < ${u(tiles)};`);
  L.push(`${ind}let mm_tc = min(mm_t, ${u(tiles - 1)});`);
  L.push(`${ind}let mm_tn = mm_tc % ${u(nTilesN)};`);
  L.push(`${ind}let mm_tm = (mm_tc / ${u(nTilesN)}) % ${u(nTilesM)};`);
  L.push(`${ind}let b = mm_tc / ${u(nTilesN * nTilesM)};`);
  L.push(batchBases(s, "b", ind));
  L.push(`${ind}let mm_row0 = mm_tm * ${u(BM)};`);
  L.push(`${ind}let mm_col0 = mm_tn * ${u(BN)};`);
  for (let r = 0; r < rm; r++) for (let c4 = 0; c4 < rn / 4; c4++) L.push(`${ind}var mm_acc${r}_${c4} = vec4<f32>(0.0);`);
  L.push(`${ind}for (var mm_k0 = 0u; mm_k0 < ${loopEnd(K, t, "C")}; mm_k0 += ${u(bk)}) {`);
  /** distribute `slots` vec4 slots over the NT threads; body(e) emits one slot */
  const slots = (n: number, body: () => void): void => {
    for (let p = 0; p < Math.ceil(n / NT); p++) {
      const partial = (p + 1) * NT > n;
      L.push(`${i2}{`, `${i2}  let mm_e = mm_li + ${u(p * NT)};`);
      if (partial) L.push(`${i2}  if (mm_e < ${u(n)}) {`);
      body();
      if (partial) L.push(`${i2}  }`);
      L.push(`${i2}}`);
    }
  };
  const j2 = i2 + "  ";
  // A tile: BM rows × KQ quads along k
  slots(BM * KQ, () => {
    L.push(`${j2}let mm_m = mm_e / ${u(KQ)};`);
    L.push(`${j2}let mm_k = mm_k0 + (mm_e % ${u(KQ)}) * 4u;`);
    L.push(`${j2}let mm_ra = mm_aBase + min(mm_row0 + mm_m, ${u(M - 1)}) * ${u(A.rowStride)};`);
    if (aVec) L.push(`${j2}let mm_v = select(vec4<f32>(0.0), ${widened(A, `A[(mm_ra + min(mm_k, ${u(K - 4)})) / 4u]`, true)}, mm_k < ${u(K)});`);
    else {
      const el = (q: number): string =>
        `select(0.0, ${widened(A, `A[mm_ra + min(mm_k + ${u(q)}, ${u(K - 1)}) * ${u(A.colStride)}]`, false)}, mm_k + ${u(q)} < ${u(K)})`;
      L.push(`${j2}let mm_v = vec4<f32>(${[0, 1, 2, 3].map(el).join(", ")});`);
    }
    L.push(`${j2}mm_As[mm_e] = mm_v;`);
  });
  // B tile: bk rows of k × BN/4 quads along n
  slots((bk * BN) / 4, () => {
    L.push(`${j2}let mm_n = mm_col0 + (mm_e % ${u(BN / 4)}) * 4u;`);
    L.push(`${j2}let mm_k = mm_k0 + mm_e / ${u(BN / 4)};`);
    L.push(`${j2}let mm_rb = mm_bBase + min(mm_k, ${u(K - 1)}) * ${u(B.rowStride)};`);
    if (bVec) L.push(`${j2}let mm_v = ${widened(B, `B[(mm_rb + min(mm_n, ${u(N - 4)})) / 4u]`, true)};`);
    else {
      const el = (q: number): string => widened(B, `B[mm_rb + min(mm_n + ${u(q)}, ${u(N - 1)}) * ${u(B.colStride)}]`, false);
      L.push(`${j2}let mm_v = vec4<f32>(${[0, 1, 2, 3].map(el).join(", ")});`);
    }
    L.push(`${j2}mm_Bs[mm_e] = select(vec4<f32>(0.0), mm_v, mm_k < ${u(K)});`);
  });
  L.push(`${i2}workgroupBarrier();`);
  L.push(`${i2}for (var mm_kq = 0u; mm_kq < ${loopEnd(KQ, t, "C")}; mm_kq++) {`);
  const i3 = i2 + "  ";
  for (let r = 0; r < rm; r++) L.push(`${i3}let mm_a${r} = mm_As[(mm_lid.y + ${u(r * ty)}) * ${u(KQ)} + mm_kq];`);
  for (let q = 0; q < 4; q++) {
    for (let c4 = 0; c4 < rn / 4; c4++) L.push(`${i3}let mm_b${q}_${c4} = mm_Bs[(mm_kq * 4u + ${u(q)}) * ${u(BN / 4)} + mm_lid.x + ${u(c4 * tx)}];`);
    for (let r = 0; r < rm; r++)
      for (let c4 = 0; c4 < rn / 4; c4++) L.push(`${i3}mm_acc${r}_${c4} = fma(vec4<f32>(mm_a${r}[${q}]), mm_b${q}_${c4}, mm_acc${r}_${c4});`);
  }
  L.push(`${i2}}`);
  L.push(`${i2}workgroupBarrier();`);
  L.push(`${ind}}`);
  L.push(`${ind}if (!mm_valid) { return; }`);
  for (let r = 0; r < rm; r++) {
    L.push(`${ind}{`);
    L.push(`${ind}  let i = mm_row0 + mm_lid.y + ${u(r * ty)};`);
    L.push(`${ind}  if (i < ${u(M)}) {`);
    L.push(`${ind}    let mm_crow = b * ${u(M * N)} + i * ${u(N)};`);
    for (let c4 = 0; c4 < rn / 4; c4++)
      for (let q = 0; q < 4; q++)
        L.push(
          `${ind}    { let j = mm_col0 + (mm_lid.x + ${u(c4 * tx)}) * 4u + ${u(q)}; if (j < ${u(N)}) { C[mm_crow + j] = ${epi}(mm_acc${r}_${c4}[${q}], b, i, j); } }`,
        );
    L.push(`${ind}  }`, `${ind}}`);
  }
  L.push("}", "");
  return {
    wgsl: L.join("\n"),
    workgroups: g.workgroups,
    variant: `tiled ${BM}x${BN}x${bk} r${rm}x${rn}${aVec ? " a4" : ""}${bVec ? " b4" : ""}`,
  };
}

// ---------------------------------------------------------------------------------------
// simple: one output per invocation

function simpleMatmul(s: MatmulSpec, t: KernelTarget, epi: string): MatmulKernel {
  const { M, N, K } = s;
  const WG = Math.min(64, t.maxInvocations);
  const total = batchCount(s) * M * N;
  const g = grid(Math.ceil(total / WG), t.maxWorkgroupsPerDim);
  const wgsl = `${enableF16(s)
    .map((x) => `${x}\n`)
    .join("")}@group(0) @binding(0) var<storage, read_write> C: array<f32>;
@group(0) @binding(1) var<storage, read> A: array<${operandType(s.a, false)}>;
@group(0) @binding(2) var<storage, read> B: array<${operandType(s.b, false)}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) mm_wid: vec3<u32>, @builtin(local_invocation_index) mm_li: u32) {
  let mm_lin = (${linearTile(g.workgroups)}) * ${u(WG)} + mm_li;
  if (mm_lin >= ${u(total)}) { return; }
  let j = mm_lin % ${u(N)};
  let i = (mm_lin / ${u(N)}) % ${u(M)};
  let b = mm_lin / ${u(M * N)};
${batchBases(s, "b", "  ")}
  let mm_ap = mm_aBase + i * ${u(s.a.rowStride)};
  let mm_bp = mm_bBase + j * ${u(s.b.colStride)};
  var mm_acc = 0.0;
  for (var k = 0u; k < ${loopEnd(K, t, "C")}; k++) {
    mm_acc = fma(${widened(s.a, `A[mm_ap + k * ${u(s.a.colStride)}]`, false)}, ${widened(s.b, `B[mm_bp + k * ${u(s.b.rowStride)}]`, false)}, mm_acc);
  }
  C[mm_lin] = ${epi}(mm_acc, b, i, j);
}
`;
  return { wgsl, workgroups: g.workgroups, variant: "simple" };
}
