import { attentionKernel } from "../kernels/attention.ts";
import type { OperandTexture } from "../kernels/matmul.ts";
import { matmulKernel } from "../kernels/matmul-epilogue.ts";
import type { MatmulTuning } from "../kernels/matmul-tuning.ts";
import { elementwiseKernel, type GeneratedKernel, reduceKernel } from "../kernels/pointwise.ts";
import { rowKernel, type RowTarget } from "../kernels/row.ts";
import { writeSlotKernel } from "../kernels/write-slot.ts";
import type { Node } from "../compiler/ir.ts";
import { epilogueInputs, firstExtraOutputBinding, type Kernel, type KernelKind, type KernelOf, type Schedule } from "../compiler/schedule.ts";
import { numel } from "../compiler/tensor.ts";

/** What lowering a kernel needs besides the kernel: the schedule, the device, how weights are stored. */
export interface LoweringContext {
  readonly s: Schedule;
  readonly target: RowTarget & {
    readonly vec4?: boolean;
    readonly shaderF16?: boolean;
    readonly maxWorkgroupStorage: number;
    readonly maxWorkgroupsPerDim: number;
  };
  /** the parameters this kernel reads that are stored as f16 */
  readonly half: ReadonlySet<Node>;
  readonly tuning?: MatmulTuning;
  /** the input an in-place kernel (elementwise, or a cache's write-slot) reads or writes through its output buffer */
  readonly aliased?: Node;
  /** a matmul's B is constant while the plan runs (it may come from a texture) */
  readonly textureB: boolean;
}

export type Lowered = GeneratedKernel & { readonly variant?: string; readonly bTexture?: OperandTexture };

/** A buffer a kernel binds besides its output (binding 0): the node whose buffer it is, and whether it may be a texture (a matmul's B). */
export interface KernelRead {
  readonly binding: number;
  readonly node: Node;
  readonly b?: true;
}

/**
 * How one kind of kernel becomes a shader: its WGSL, the buffers it binds (read here and
 * declared by the same generator, so plan and shader cannot disagree), its FLOPs and its
 * label in plans and profiles.
 */
export interface KernelLowering<K extends KernelKind> {
  generate(k: KernelOf<K>, c: LoweringContext): Lowered;
  reads(k: KernelOf<K>, aliased: Node | undefined): KernelRead[];
  flops(k: KernelOf<K>, s: Schedule): number;
  label(k: KernelOf<K>): string;
}

/** Every input in order from binding 1; an in-place input reads through the output's binding instead. */
const inputsFrom1 = (k: Kernel, aliased: Node | undefined): KernelRead[] => k.inputs.flatMap((node, i) => (node === aliased ? [] : [{ binding: i + 1, node }]));
const perElement = (k: Kernel, s: Schedule) => numel(s.shapes.get(k.output)!) * k.fused;
const outputsLabel = (k: Kernel) => [k.output, ...(k.also ?? [])].map((o) => o.op).join(",");
/** The f16-stored parameters this kernel reads (its generator widens them as it loads). */
const halfReads = (k: Kernel, c: LoweringContext): Set<Node> => new Set(k.inputs.filter((n) => c.half.has(n)));
const body = (k: Kernel, c: LoweringContext) => {
  const reads = halfReads(k, c);
  return {
    output: k.output,
    inputs: k.inputs,
    shapes: c.s.shapes,
    target: c.target,
    dims: c.s.dims,
    ...(c.aliased ? { aliased: new Set([c.aliased]) } : {}),
    ...(k.also ? { also: k.also } : {}),
    ...(reads.size ? { half: reads } : {}),
  };
};

/** The lowering of each kernel kind: a new kind without an entry is a type error. */
export const KERNEL_KINDS: { readonly [K in KernelKind]: KernelLowering<K> } = {
  elementwise: { generate: (k, c) => elementwiseKernel(body(k, c)), reads: inputsFrom1, flops: perElement, label: outputsLabel },
  reduce: {
    generate: (k, c) => reduceKernel(body(k, c)),
    reads: inputsFrom1,
    flops: (k, s) => numel(s.shapes.get(k.output.src[0])!) * k.fused,
    label: outputsLabel,
  },
  "write-slot": {
    generate: (k, c) => writeSlotKernel(body(k, c)),
    reads: inputsFrom1,
    flops: (k, s) => numel(s.shapes.get(k.output.src[1])!) * k.fused,
    label: outputsLabel,
  },
  row: {
    generate: (k, c) => rowKernel(k, c.s.shapes, c.target, c.s.dims, halfReads(k, c)),
    reads: inputsFrom1,
    flops: perElement,
    label: (k) => (k.row.softmax ? "softmax" : `row+${k.output.op}`),
  },
  attention: {
    generate: (k, c) => attentionKernel(k, c.s.shapes, c.target, c.s.dims),
    reads: inputsFrom1,
    flops(k, s) {
      const q = s.shapes.get(k.chain.first.src[0])!;
      const v = s.shapes.get(k.chain.v.base)!;
      const scores = numel(s.shapes.get(k.chain.first)!);
      return 2 * scores * q[q.length - 1] + 2 * scores * v[v.length - 1] + numel(s.shapes.get(k.output)!) * (k.fused - 2);
    },
    label: (k) => (k.chain.kind === "softmax" ? "attention" : "kv-memory"),
  },
  matmul: {
    generate: (k, c) => matmulKernel(k, c.s.shapes, c.target, c.s.dims, c.tuning, c.textureB, halfReads(k, c)),
    // A at 1, B at 2, the epilogue's buffers from 3 (an operand's base again if the epilogue reads it too)
    reads: (k) => [
      { binding: 1, node: k.matmul.a.base },
      { binding: 2, node: k.matmul.b.base, b: true },
      ...epilogueInputs(k).map((node, i) => ({ binding: 3 + i, node })),
    ],
    flops(k, s) {
      const a = s.shapes.get(k.matmul.node.src[0])!;
      return 2 * numel(s.shapes.get(k.matmul.node)!) * a[a.length - 1] + numel(s.shapes.get(k.output)!) * (k.fused - 1);
    },
    label: (k) => `matmul${k.output === k.matmul.node ? "" : `+${outputsLabel(k)}`}`,
  },
};

/** The lowering of `k`'s kind, typed for `k`. */
export function lowering<K extends KernelKind>(k: KernelOf<K>): KernelLowering<K> {
  return KERNEL_KINDS[k.kind as K];
}

/** Every binding a kernel uses: its output at 0, what it reads, its extra outputs after those. */
export function kernelBindings(k: Kernel, aliased: Node | undefined): { binding: number; node: Node; write: boolean; b?: true }[] {
  const reads = lowering(k).reads(k as never, aliased);
  const extra = (k.also ?? []).map((node, m) => ({ binding: firstExtraOutputBinding(k) + m, node, write: true }));
  return [{ binding: 0, node: k.output, write: true }, ...reads.map((r) => ({ ...r, write: false })), ...extra];
}
