import type { Node } from "./ir.ts";
import { mergeElementwise } from "./multi-output.ts";
import type { Root } from "./pipeline.ts";
import { emitKernels } from "./schedule/kernels.ts";
import { matmulEpilogues } from "./schedule/epilogues.ts";
import { limitInlineDepth, materializeEverything, materializeShared, materializeSources } from "./schedule/materialize.ts";
import { matmulOperands } from "./schedule/matmul-operands.ts";
import { rowGroups } from "./schedule/row-groups.ts";
import { initialState, type ScheduleState } from "./schedule/state.ts";
import { sumFolds } from "./schedule/sum-folds.ts";
import { transposeWeights } from "./schedule/transpose-weights.ts";

export { concreteShapes } from "./schedule/state.ts";

/**
 * The scheduler decides which IR nodes get a buffer ("materialized") and groups
 * everything else into the kernels that compute those buffers. Movement ops never get
 * a buffer of their own: they become index math inside their consumers (zero-copy
 * transposes, broadcasts, slices). Elementwise chains fold into the kernel that needs
 * them; a matmul folds into its consumer's kernel as the accumulator of an epilogue.
 * Each step is a named pass over one ScheduleState (compiler/schedule/), in one list.
 */

export type KernelKind = "elementwise" | "reduce" | "matmul" | "attention" | "row" | "write-slot";

/**
 * Two chained matmuls with a row-wise step between, computed in one kernel without
 * materializing the scores: attention (`softmax(S(Q Kᵀ)) V`, online softmax) and the
 * FFN memory branch (`act(x Kᵀ) V`, pointwise).
 */
export interface ChainedMatmul {
  readonly kind: "softmax" | "pointwise";
  /** the first matmul (scores); inside the kernel its value is `dot` */
  readonly first: Node;
  readonly q: StridedView;
  readonly k: StridedView;
  /** softmax: the masked/scaled scores S; pointwise: the probabilities P */
  readonly scores: Node;
  readonly v: StridedView;
}

export interface StridedView {
  readonly base: Node;
  readonly offset: number;
  readonly strides: readonly number[];
}

/** What every kernel has: the buffer it writes, the buffers it reads, how much it computes. */
interface KernelBase {
  /** the materialized node this kernel writes */
  readonly output: Node;
  /** materialized nodes it reads (its bindings, besides the output) */
  readonly inputs: readonly Node[];
  /**
   * more outputs of `output`'s shape computed in the same pass: elementwise kernels bind
   * them after their inputs, matmul epilogues after their epilogue inputs
   */
  readonly also?: readonly Node[];
  /** number of IR nodes this kernel computes (itself plus what it inlines) */
  readonly fused: number;
}

/**
 * A matmul kernel's matmul node (its result is `acc` inside the epilogue) and operand
 * views; `sumAxis`: the output is `sum(matmul, sumAxis)` over a batch axis, computed as
 * one matmul with that axis folded into K (see foldableSum)
 */
export interface MatmulOperands {
  readonly node: Node;
  readonly a: StridedView;
  readonly b: StridedView;
  readonly sumAxis?: number;
}

export interface ElementwiseKernel extends KernelBase {
  readonly kind: "elementwise";
}
export interface ReduceKernel extends KernelBase {
  readonly kind: "reduce";
}
export interface WriteSlotKernel extends KernelBase {
  readonly kind: "write-slot";
}
/** a matmul with the elementwise epilogue above it */
export interface MatmulKernel extends KernelBase {
  readonly kind: "matmul";
  readonly matmul: MatmulOperands;
}
/** two chained matmuls (attention, the FFN memory): `matmul` is the second, with q and v as its views */
export interface AttentionKernel extends KernelBase {
  readonly kind: "attention";
  readonly matmul: MatmulOperands;
  readonly chain: ChainedMatmul;
}
/** the reductions along `axis` (scalars per row, in dependency order) and the value that needs them; `softmax` names the common case */
export interface RowKernel extends KernelBase {
  readonly kind: "row";
  readonly row: { readonly axis: number; readonly reductions: readonly Node[]; readonly softmax: boolean };
}

/** One kernel of a schedule: each kind carries exactly the fields its lowering needs. */
export type Kernel = ElementwiseKernel | ReduceKernel | WriteSlotKernel | MatmulKernel | AttentionKernel | RowKernel;
export type KernelOf<K extends KernelKind> = Extract<Kernel, { readonly kind: K }>;

/** The matmul a kernel computes, if any (a plain or chained matmul kernel). */
export const matmulOf = (k: Kernel): MatmulOperands | undefined => (k.kind === "matmul" || k.kind === "attention" ? k.matmul : undefined);

export interface Schedule {
  readonly kernels: readonly Kernel[];
  readonly materialized: ReadonlySet<Node>;
  readonly shapes: ReadonlyMap<Node, readonly number[]>;
  /** the run-time dims this schedule is specialised to */
  readonly dims: Readonly<Record<string, number>>;
  /** 2-D parameters stored transposed on the device (read only as `wᵀ` matmul operands) */
  readonly transposedParams: ReadonlySet<Node>;
  /** IR nodes reachable from the roots */
  readonly irNodes: number;
}

export interface ScheduleLimits {
  /** storage buffers one kernel may bind (output included) */
  readonly maxBindings: number;
  /** false: one kernel per IR op, nothing inlined (the baseline the benchmarks compare with) */
  readonly fuse?: boolean;
  /** fuse chained matmuls (attention, FFN memory) into one kernel */
  readonly fuseChains?: boolean;
}

/** One step of the scheduler: reads and extends the state (which nodes get a buffer, how they group, the kernels). */
export interface SchedulePass {
  readonly name: string;
  readonly description: string;
  run(state: ScheduleState): void;
}

const mergeKernels: SchedulePass = {
  name: "merge-elementwise",
  description: "elementwise kernels of one shape that read or compute a common value share a pass (multi-output kernels)",
  run(s) {
    s.kernels = mergeElementwise(s.kernels, s.shapes, (x) => s.mat.has(x), s.limits.maxBindings);
  },
};

/** The scheduler's passes, in order: where each fusion happens. */
export const SCHEDULE_PASSES: readonly SchedulePass[] = [
  materializeSources,
  limitInlineDepth,
  materializeShared,
  matmulOperands(true),
  matmulEpilogues,
  rowGroups,
  sumFolds,
  emitKernels,
  mergeKernels,
  transposeWeights,
];

/** Without fusion (`ScheduleLimits.fuse` false): one kernel per IR op. */
export const UNFUSED_PASSES: readonly SchedulePass[] = [
  materializeSources,
  limitInlineDepth,
  materializeShared,
  materializeEverything,
  matmulOperands(false),
  emitKernels,
  transposeWeights,
];

/** Every scheduler pass name `--dump-after` accepts. */
export const SCHEDULE_STAGES: readonly string[] = [...new Set([...SCHEDULE_PASSES, ...UNFUSED_PASSES].map((p) => p.name))];

/**
 * `forced`: nodes that must get a buffer (grown when a kernel would exceed the binding
 * limit). `onPass` sees the state after each pass (for `--dump-after`).
 */
export function schedule(
  roots: readonly Root[],
  dims: Readonly<Record<string, number>>,
  limits: ScheduleLimits,
  forced: ReadonlySet<Node> = new Set(),
  onPass?: (pass: string, state: ScheduleState) => void,
): Schedule {
  const s = initialState(roots, dims, limits, forced);
  for (const pass of limits.fuse === false ? UNFUSED_PASSES : SCHEDULE_PASSES) {
    pass.run(s);
    if (s.tooWide.size) return schedule(roots, dims, limits, new Set([...forced, ...s.tooWide]), onPass);
    onPass?.(pass.name, s);
  }
  return { kernels: s.kernels, materialized: s.mat, shapes: s.shapes, dims, transposedParams: s.transposedParams, irNodes: s.order.length };
}

/**
 * The binding of a kernel's first extra output (`also`): after a matmul's epilogue
 * inputs, after any other kernel's inputs. Later ones follow in order.
 */
export function firstExtraOutputBinding(k: Kernel): number {
  return k.kind === "matmul" ? 3 + epilogueInputs(k).length : k.inputs.length + 1;
}

/**
 * Buffers the epilogue reads, in binding order from 3: every materialized node reached
 * from the output without passing through the matmul. An operand's base that the
 * epilogue also reads (`x @ w + x`) is bound a second time, read-only.
 */
export function epilogueInputs(k: Pick<MatmulKernel, "output" | "inputs" | "also"> & { readonly matmul: Pick<MatmulOperands, "node"> }): Node[] {
  const mm = k.matmul;
  if (k.output === mm.node) return [];
  const inputs = new Set(k.inputs);
  const out = new Set<Node>();
  const seen = new Set<Node>();
  const visit = (x: Node, top: boolean): void => {
    if (x === mm.node || seen.has(x)) return;
    seen.add(x);
    if (!top && inputs.has(x)) {
      out.add(x);
      return;
    }
    x.src.forEach((s) => visit(s, false));
  };
  for (const o of [k.output, ...(k.also ?? [])]) visit(o, true);
  return [...out];
}
