/**
 * What an autotuner needs from the matmul generators, without a device: a stable key per
 * matmul (spec + epilogue kind), its inverse, the candidate configurations worth timing,
 * and the table type the plan builder takes (runtime/autotune.ts does the timing).
 */
import {
  type KernelTarget,
  type MatmulOperand,
  type MatmulOptions,
  type MatmulSpec,
  type MatmulVariant,
  generateMatmul,
  resolveMatmulOptions,
  supportedVariants,
} from "./matmul.ts";

/** Tuned choices by matmulKey; a key it has no entry for gets the cost model's choice. */
export interface MatmulTuning {
  get(key: string): MatmulOptions | undefined;
}

const opKey = (o: MatmulOperand): string => `${o.offset}:${o.batchStrides.join(",")}:${o.rowStride}:${o.colStride}`;

/**
 * `batch|MxNxK|a<operand>|b<operand>|<epilogue>`, operand = `offset:batchStrides:row:col`,
 * e.g. `2|65x64x32|a0:2080:32:1|b0:0:64:1|add`. Everything the generated kernel depends
 * on is in it (offsets and strides decide vec4 loads), so equal keys mean equal kernels.
 * `epilogue` is the kind of the fused store ("none", or the IR op of the kernel's output).
 */
export function matmulKey(s: MatmulSpec, epilogue: string): string {
  return `${s.batchShape.join(",")}|${s.M}x${s.N}x${s.K}|a${opKey(s.a)}|b${opKey(s.b)}|${epilogue}`;
}

const KEY_RE = /^([\d,]*)\|(\d+)x(\d+)x(\d+)\|a(\d+):([\d,]*):(\d+):(\d+)\|b(\d+):([\d,]*):(\d+):(\d+)\|([\w-]+)$/;

/** The spec and epilogue kind of a matmulKey; undefined when `key` is not one. */
export function parseMatmulKey(key: string): { spec: MatmulSpec; epilogue: string } | undefined {
  const m = KEY_RE.exec(key);
  if (!m) return undefined;
  const list = (x: string): number[] => (x === "" ? [] : x.split(",").map(Number));
  const op = (i: number): MatmulOperand => ({ offset: Number(m[i]), batchStrides: list(m[i + 1]), rowStride: Number(m[i + 2]), colStride: Number(m[i + 3]) });
  const spec: MatmulSpec = { batchShape: list(m[1]), M: Number(m[2]), N: Number(m[3]), K: Number(m[4]), a: op(5), b: op(9) };
  if (spec.a.batchStrides.length !== spec.batchShape.length || spec.b.batchStrides.length !== spec.batchShape.length) return undefined;
  return { spec, epilogue: m[13] };
}

/** Whether `opts` generates a kernel for this spec on this target (a cached entry may not). */
export function optionsFit(spec: MatmulSpec, target: KernelTarget, opts: MatmulOptions): boolean {
  try {
    generateMatmul(spec, target, opts);
    return true;
  } catch {
    return false;
  }
}

const sameOptions = (x: MatmulOptions, y: MatmulOptions): boolean => JSON.stringify(x) === JSON.stringify(y);

/**
 * Configurations worth timing for a plan's matmul, the cost model's choice first (fully
 * resolved, see resolveMatmulOptions): for the subgroup kernel, its register block halved
 * and doubled in height, one B load wider (narrower never won at tiny-vqa's matmuls), the
 * other B load width, and a Kᵀ operand read one k per load instead of 4; then one of each
 * other variant the target runs, except:
 * - "sg-texture": a plan binds a texture at 2 only for constant B, and those kernels skip
 *   tuning (kernels/matmul-epilogue.ts); the ones tuned here bind a storage buffer;
 * - "tiled" where the subgroup kernel runs on a CPU adapter: on lavapipe it was 3–15×
 *   slower than sg-buffer at the tiny-vqa matmuls measured, and its cold compile (3–5 s)
 *   cost more than all the other candidates of a shape together.
 * Every entry generates (invalid neighbours are dropped).
 */
export function matmulCandidates(spec: MatmulSpec, target: KernelTarget): MatmulOptions[] {
  const base = resolveMatmulOptions(spec, target);
  const out: MatmulOptions[] = [base];
  const add = (o: MatmulOptions): void => {
    if (!optionsFit(spec, target, o)) return;
    const r = resolveMatmulOptions(spec, target, o); // e.g. a vec4 B load the layout does not allow becomes scalar
    if (!out.some((x) => sameOptions(x, r))) out.push(r);
  };
  if (base.variant === "sg-buffer") {
    const { tm = 1, tn = 1 } = base;
    const v = base.bLoad === "lane4" ? 4 : 1;
    // blocks past the matrix (rows beyond M after batch folding, columns beyond N) only
    // add work; past ~256 accumulators per lane everything spills (see chooseBlock)
    const maxRows = spec.M * spec.batchShape.reduce((x, y) => x * y, 1);
    const block = (o: { tm: number; tn: number; bLoad: "lane" | "lane4" }): void => {
      const fits = o.tm >= 1 && o.tm <= Math.min(32, maxRows) && o.tn >= 1 && o.tn <= 16 && o.tm * o.tn <= 256;
      const grows = o.tn <= tn || target.subgroupSize * tn < spec.N;
      if (fits && grows) add({ ...base, ...o });
    };
    block({ tm: Math.ceil(tm / 2), tn, bLoad: base.bLoad! });
    block({ tm: tm * 2, tn, bLoad: base.bLoad! });
    block({ tm, tn: tn + v, bLoad: base.bLoad! });
    block({ tm, tn: v === 4 ? tn : Math.max(4, Math.ceil(tn / 4) * 4), bLoad: v === 4 ? "lane" : "lane4" });
    // a Kᵀ operand also one k per load (the vec4 along k gained ~8% on attention scores)
    if (base.bkLoad === "k4") add({ ...base, bkLoad: "lane" });
  }
  const others: MatmulVariant[] = target.isFallback && base.variant === "sg-buffer" ? ["simple"] : ["sg-buffer", "tiled", "simple"];
  for (const variant of supportedVariants(spec, target).filter((x) => others.includes(x))) if (variant !== base.variant) add({ variant });
  return out;
}
