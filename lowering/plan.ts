import type { Span } from "../grammar/source.ts";
import type { OperandTexture } from "../kernels/matmul.ts";
import type { MatmulTuning } from "../kernels/matmul-tuning.ts";
import type { RowTarget } from "../kernels/row.ts";
import type { CompiledModel } from "../compiler/elaborate.ts";
import type { Node } from "../compiler/ir.ts";
import { type BufferRole, type MemoryPlan, planMemory } from "../compiler/memory-plan.ts";
import { runPipeline, type Root } from "../compiler/pipeline.ts";
import { type ParamPart, splitLargeParams } from "../compiler/passes/split-params.ts";
import { checkPlanBuffers, type DeviceLimits } from "../compiler/size-limits.ts";
import { kernelBindings, lowering } from "./kernel-kinds.ts";
import { type Kernel, matmulOf, type Schedule, schedule } from "../compiler/schedule.ts";
import type { ScheduleState } from "../compiler/schedule/state.ts";
import { numel } from "../compiler/tensor.ts";

/** What the plan builder needs to know about the device: kernel shape choices and limits. */
export interface PlanTarget extends RowTarget, DeviceLimits {
  readonly maxStorageBuffers: number;
  /** whether chained matmuls run as one kernel on this device (see runtime/webgpu-backend.ts) */
  readonly fuseChains: boolean;
  /** let elementwise kernels write in place (default true; see runtime/webgpu-backend.ts) */
  readonly inPlace?: boolean;
  /** read constant matmul B operands from textures where the kernel choice picks them (default true) */
  readonly textureB?: boolean;
  /** vec4 elementwise and reduce kernels where the layout allows (default true; see kernels/pointwise.ts) */
  readonly vec4?: boolean;
  /** the adapter has `shader-f16` (f16 weights need it; default false) */
  readonly shaderF16?: boolean;
}

/** WebGPU's guaranteed limits: what a plan is built for when no adapter says more. */
export const WEBGPU_DEFAULT_TARGET: PlanTarget = {
  isFallback: false,
  subgroupSize: 0,
  maxWorkgroupStorage: 16384,
  maxInvocations: 256,
  maxWorkgroupsPerDim: 65535,
  maxStorageBuffers: 8,
  maxBindingBytes: 128 * 2 ** 20,
  maxBufferBytes: 256 * 2 ** 20,
  fuseChains: true,
};

export interface PlanBinding {
  readonly binding: number;
  readonly slot: number;
  readonly write: boolean;
  /**
   * bind Plan.textures[texture] here instead of the slot's buffer (a matmul's B at 2, variant
   * "sg-texture"); `slot` is then the parameter the texture is filled from
   */
  readonly texture?: number;
}

/**
 * A constant matmul B operand (a parameter nothing writes while the plan runs) kept in an
 * rgba32float texture, read with texel fetches by the "sg-texture" kernels that bind it at
 * 2. One per distinct (parameter, layout): kernels that read the parameter the same way
 * share it. The executor fills it with `layout.fill` (binding 0 the texture, 1 the
 * parameter's buffer) after every write of the parameter.
 */
export interface PlanTexture {
  readonly param: string;
  /** the parameter's slot: the fill's source */
  readonly slot: number;
  readonly layout: OperandTexture;
}

/** Device memory of the plan's textures (resident on top of the parameters they copy). */
export function planTextureBytes(plan: Plan): number {
  return plan.textures.reduce((a, t) => a + t.layout.width * t.layout.height * (t.layout.format === "rgba16float" ? 8 : 16), 0);
}

export interface PlanKernel {
  readonly index: number;
  readonly kind: Kernel["kind"];
  readonly label: string;
  readonly wgsl: string;
  readonly workgroups: readonly [number, number, number];
  readonly bindings: readonly PlanBinding[];
  /** DSL locations of what it computes, outermost last */
  readonly spans: readonly Span[];
  /** the block instance it belongs to, e.g. `language.layer.3.attn` */
  readonly path: string;
  readonly flops: number;
  readonly bytes: number;
  /** IR nodes folded into this kernel */
  readonly fused: number;
  readonly variant: string;
}

export interface PlanTensor {
  readonly name: string;
  readonly slot: number;
  readonly shape: readonly number[];
  /** f16: a frozen weight stored at half precision (PlanOptions.weights) */
  readonly dtype: "f32" | "i32" | "f16";
  /** stored transposed on the device (2-D parameters read only as `wᵀ`) */
  readonly transposed?: boolean;
  /** a block of rows of a frozen weight larger than one binding (compiler/passes/split-params.ts): its values are those rows of `part.of` */
  readonly part?: ParamPart;
}

/** Everything the executor needs; pure data, no device objects. */
export interface Plan {
  readonly model: string;
  readonly dims: Readonly<Record<string, number>>;
  readonly kernels: readonly PlanKernel[];
  readonly memory: MemoryPlan;
  readonly inputs: readonly PlanTensor[];
  readonly params: readonly PlanTensor[];
  readonly outputs: readonly PlanTensor[];
  /** textures the kernels bind (PlanBinding.texture); empty unless the target runs "sg-texture" */
  readonly textures: readonly PlanTexture[];
  /** IR nodes after the pass pipeline */
  readonly irNodes: number;
}

/**
 * What the executor reads of a plan: plain data (no IR nodes), so a plan can travel as
 * JSON in a generated module (`dehvf compile --emit ts`) and run where nothing compiles.
 * A Plan is one; `runnablePlan` drops the rest.
 */
export interface RunnablePlan {
  readonly model: string;
  readonly dims: Readonly<Record<string, number>>;
  readonly kernels: readonly PlanKernel[];
  readonly memory: { readonly slots: readonly { readonly id: number; readonly role: BufferRole; readonly size: number }[] };
  readonly inputs: readonly PlanTensor[];
  readonly params: readonly PlanTensor[];
  readonly outputs: readonly PlanTensor[];
  readonly textures: readonly PlanTexture[];
}

export function runnablePlan(plan: Plan): RunnablePlan {
  const { model, dims, kernels, inputs, params, outputs, textures } = plan;
  return { model, dims, kernels, memory: { slots: plan.memory.slots.map(({ id, role, size }) => ({ id, role, size })) }, inputs, params, outputs, textures };
}

/** Bytes a kernel reads and writes; a cache slot written in place moves that slot, not the cache. */
function bytesOf(k: Kernel, s: Schedule, aliased: Node | undefined): number {
  const size = (n: Node) => numel(s.shapes.get(n)!) * 4;
  const all = [k.output, ...(k.also ?? []), ...k.inputs];
  if (k.kind !== "write-slot" || !aliased) return all.reduce((a, n) => a + size(n), 0);
  return all.reduce((a, n) => a + (n === aliased ? 0 : n === k.output ? size(k.output.src[1]) : size(n)), 0);
}

export interface PlanOptions {
  /** false: one kernel per IR op (baseline for benchmarks) */
  readonly fuse?: boolean;
  /** sees the scheduler's state after each of its passes (`--dump-after`) */
  readonly onSchedulePass?: (pass: string, state: ScheduleState) => void;
  /** fuse attention / FFN-memory chains (default: the target's choice) */
  readonly fuseChains?: boolean;
  /** per-matmul configurations measured on the device (runtime/autotune.ts); none: the cost model's */
  readonly matmulTuning?: MatmulTuning;
  /**
   * parameters the caller overwrites between runs (a training step's updated weights and
   * optimizer state): never read through a texture, which would go stale. Default: none,
   * every parameter is constant while the plan runs (forward plans)
   */
  readonly mutableParams?: ReadonlySet<string>;
  /** false: storage-buffer B only (default: the target's `textureB`) */
  readonly textureB?: boolean;
  /**
   * "f16": store frozen weights at half precision where every kernel that reads them widens
   * f16 (see halfWeights); needs the target's `shaderF16`. Default "f32"
   */
  readonly weights?: WeightStorage;
}

/** How frozen weights are stored on the device (see PlanOptions.weights). */
export type WeightStorage = "f16" | "f32";

/** A parameter neither trained nor overwritten between runs: the weights f16 storage and splitting may take. */
const constantWeight = (p: Node<"param">, mutable: ReadonlySet<string>) => !p.attrs.trainable && !mutable.has(p.attrs.name);

/**
 * The parameters stored as f16 under `weights: "f16"`: frozen (neither trainable nor
 * overwritten between runs), read by kernels that widen f16 as they load: the B operand
 * and epilogue of plain matmul kernels (every Linear's weight, biases), elementwise,
 * reduce and row trees (an embedding's gather, norm gains). What attention chains or a
 * matmul's A operand read stays f32. Math stays f32 throughout.
 */
export function halfWeights(s: Schedule, mutable: ReadonlySet<string>): Set<Node> {
  const readable = new Map<Node, boolean>();
  for (const k of s.kernels)
    for (const n of k.inputs) {
      if (n.op !== "param") continue;
      const mm = k.kind === "matmul" ? k.matmul : undefined;
      const widened = k.kind === "elementwise" || k.kind === "reduce" || k.kind === "row" || (mm !== undefined && mm.a.base !== n);
      readable.set(n, (readable.get(n) ?? true) && widened);
    }
  return new Set([...readable].filter(([n, ok]) => ok && constantWeight(n as Node<"param">, mutable)).map(([n]) => n));
}

/**
 * The parameter a matmul kernel reads as B when that parameter stays constant while the
 * plan runs, so the kernel may read it from a texture filled once per write.
 */
function constantB(k: Kernel, mutable: ReadonlySet<string>): Node<"param"> | undefined {
  const b = k.kind === "matmul" ? k.matmul.b.base : undefined;
  return b?.op === "param" && !mutable.has((b as Node<"param">).attrs.name) ? (b as Node<"param">) : undefined;
}

/** `roots`: pass-pipeline output to plan, instead of running the pipeline here. */
export function buildPlan(
  model: CompiledModel,
  dims: Readonly<Record<string, number>>,
  target: PlanTarget,
  roots?: readonly Root[],
  opts: PlanOptions = {},
): Plan {
  const mutable = opts.mutableParams ?? new Set<string>();
  const halfAsked = (p: Node<"param">) => opts.weights === "f16" && constantWeight(p, mutable);
  const { roots: rs, parts } = splitLargeParams(roots ?? runPipeline(model.outputs, model.graph), model.graph, {
    maxBytes: Math.min(target.maxBindingBytes, target.maxBufferBytes),
    dims,
    elementBytes: (p) => (halfAsked(p) ? 2 : 4),
  });
  const sched = schedule(
    rs,
    dims,
    { maxBindings: target.maxStorageBuffers, fuse: opts.fuse, fuseChains: opts.fuseChains ?? target.fuseChains },
    undefined,
    opts.onSchedulePass,
  );
  if (opts.weights === "f16" && !target.shaderF16) throw new Error("f16 weights need a device with shader-f16");
  const half = opts.weights === "f16" ? halfWeights(sched, mutable) : new Set<Node>();
  const memory = planMemory(
    sched,
    rs.map((r) => r.node),
    { inPlace: target.inPlace ?? true, half },
  );
  const slot = (n: Node) => memory.slotOf.get(n)!.id;
  checkPlanBuffers(model, sched, memory, target);
  const textureB = opts.textureB ?? target.textureB ?? true;
  const textures: PlanTexture[] = [];
  const textureIds = new Map<string, number>();
  /** the index of B's texture for a kernel generated as sg-texture, shared per (param, layout) */
  const textureOf = (param: Node<"param">, layout: OperandTexture): number => {
    // the fill WGSL spells out the whole layout (size, k padding, B's strides and offset)
    const key = `${param.attrs.name}\n${layout.fill.wgsl}`;
    let id = textureIds.get(key);
    if (id === undefined) {
      textureIds.set(key, (id = textures.length));
      textures.push({ param: param.attrs.name, slot: slot(param), layout });
    }
    return id;
  };
  const kernels: PlanKernel[] = sched.kernels.map((k, index) => {
    const alias = memory.inPlace.get(k.output);
    const constB = textureB ? constantB(k, mutable) : undefined;
    const lower = lowering(k);
    const g = lower.generate(k, { s: sched, target, half, tuning: opts.matmulTuning, aliased: alias, textureB: constB !== undefined });
    const bTex = constB && g.bTexture ? { texture: textureOf(constB, g.bTexture) } : {};
    const bindings: PlanBinding[] = kernelBindings(k, alias).map((b) => ({ binding: b.binding, slot: slot(b.node), write: b.write, ...(b.b ? bTex : {}) }));
    const outs = [k.output, ...(k.also ?? [])];
    const mm = matmulOf(k);
    const spans = [mm?.node, ...outs]
      .map((n) => (n ? model.graph.provenance.get(n.id) : undefined))
      .filter((x, i, all): x is Span => Boolean(x) && all.findIndex((y) => y && y.file === x!.file && y.start === x!.start) === i);
    const path = model.graph.instancePath.get((mm?.node ?? k.output).id) ?? "";
    const bytes = bytesOf(k, sched, alias);
    const label = lower.label(k);
    return {
      index,
      kind: k.kind,
      label,
      wgsl: g.wgsl,
      workgroups: g.workgroups,
      bindings,
      spans,
      path,
      flops: lower.flops(k, sched),
      bytes,
      fused: k.fused,
      variant: g.variant ?? k.kind,
    };
  });
  const tensor = (n: Node, name: string): PlanTensor => ({ name, slot: slot(n), shape: sched.shapes.get(n)!, dtype: n.dtype });
  const inputs = model.inputs.filter((i) => memory.slotOf.has(i.node)).map((i) => tensor(i.node, i.name));
  const params: PlanTensor[] = [];
  for (const n of sched.materialized) {
    if (n.op !== "param") continue;
    const name = (n.attrs as { name: string }).name;
    const part = parts.get(name);
    params.push({
      ...tensor(n, name),
      transposed: sched.transposedParams.has(n) || undefined,
      ...(half.has(n) ? { dtype: "f16" as const } : {}),
      ...(part ? { part } : {}),
    });
  }
  return {
    model: model.name,
    dims,
    kernels,
    memory,
    inputs,
    params,
    outputs: rs.map((r) => tensor(r.node, r.name)),
    textures,
    irNodes: sched.irNodes,
  };
}
