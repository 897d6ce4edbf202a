import type { Span } from "../grammar/source.ts";
import { attentionKernel } from "../kernels/attention.ts";
import { matmulKernel } from "../kernels/matmul-epilogue.ts";
import type { MatmulTuning } from "../kernels/matmul-tuning.ts";
import { rowKernel, type RowTarget } from "../kernels/row.ts";
import { elementwiseKernel, type GeneratedKernel, reduceKernel } from "../kernels/pointwise.ts";
import type { CompiledModel } from "./elaborate.ts";
import type { Node } from "./ir.ts";
import { type MemoryPlan, planMemory } from "./memory-plan.ts";
import { runPipeline, type Root } from "./pipeline.ts";
import { epilogueInputs, type Kernel, type Schedule, schedule } from "./schedule.ts";
import { numel } from "./tensor.ts";

/** What the plan builder needs to know about the device: kernel shape choices and limits. */
export interface PlanTarget extends RowTarget {
  readonly maxStorageBuffers: number;
  readonly maxBindingBytes: number;
  /** whether chained matmuls run as one kernel on this device (see runtime/webgpu-backend.ts) */
  readonly fuseChains: boolean;
}

export interface PlanBinding {
  readonly binding: number;
  readonly slot: number;
  readonly write: boolean;
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
  readonly dtype: "f32" | "i32";
  /** stored transposed on the device (2-D parameters read only as `wᵀ`) */
  readonly transposed?: boolean;
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
  /** IR nodes after the pass pipeline */
  readonly irNodes: number;
}

function flopsOf(k: Kernel, s: Schedule): number {
  const out = numel(s.shapes.get(k.output)!);
  if (k.chain) {
    const q = s.shapes.get(k.chain.first.src[0])!;
    const v = s.shapes.get(k.chain.v.base)!;
    const scores = numel(s.shapes.get(k.chain.first)!);
    return 2 * scores * q[q.length - 1] + 2 * scores * v[v.length - 1] + out * (k.fused - 2);
  }
  if (k.matmul) {
    const a = s.shapes.get(k.matmul.node.src[0])!;
    return 2 * numel(s.shapes.get(k.matmul.node)!) * a[a.length - 1] + out * (k.fused - 1);
  }
  if (k.kind === "reduce") return numel(s.shapes.get(k.output.src[0])!) * k.fused;
  return out * k.fused;
}

/** `aliased`: the input an in-place kernel (always elementwise) reads through its output buffer */
function generate(k: Kernel, s: Schedule, target: PlanTarget, tuning?: MatmulTuning, aliased?: Node): GeneratedKernel & { variant?: string } {
  const body = { output: k.output, inputs: k.inputs, shapes: s.shapes, target, dims: s.dims, ...(aliased ? { aliased: new Set([aliased]) } : {}), ...(k.also ? { also: k.also } : {}) };
  if (k.kind === "row") return rowKernel(k, s.shapes, target, s.dims);
  if (k.kind === "attention") return attentionKernel(k, s.shapes, target, s.dims);
  if (k.kind === "matmul") return matmulKernel(k, s.shapes, target, s.dims, tuning);
  if (k.kind === "reduce") return reduceKernel(body);
  return elementwiseKernel(body);
}

export interface PlanOptions {
  /** false: one kernel per IR op (baseline for benchmarks) */
  readonly fuse?: boolean;
  /** fuse attention / FFN-memory chains (default: the target's choice) */
  readonly fuseChains?: boolean;
  /** per-matmul configurations measured on the device (runtime/autotune.ts); none: the cost model's */
  readonly matmulTuning?: MatmulTuning;
}

/** `roots`: pass-pipeline output to plan, instead of running the pipeline here. */
export function buildPlan(model: CompiledModel, dims: Readonly<Record<string, number>>, target: PlanTarget, roots?: readonly Root[], opts: PlanOptions = {}): Plan {
  const rs = roots ?? runPipeline(model.outputs, model.graph);
  const sched = schedule(rs, dims, { maxBindings: target.maxStorageBuffers, fuse: opts.fuse, fuseChains: opts.fuseChains ?? target.fuseChains });
  // DEHVF_IN_PLACE=0 turns in-place kernels off, for comparisons
  const memory = planMemory(sched, rs.map((r) => r.node), { inPlace: process.env.DEHVF_IN_PLACE !== "0" });
  const slot = (n: Node) => memory.slotOf.get(n)!.id;
  const maxBinding = target.maxBindingBytes;
  for (const sl of memory.slots)
    if (sl.size > maxBinding)
      throw new Error(
        `tensor ${sl.tensors.map((t) => (t.op === "param" || t.op === "input" ? (t.attrs as { name: string }).name : t.op)).join("/")} needs ${(sl.size / 2 ** 20).toFixed(1)} MiB, over this device's ${(maxBinding / 2 ** 20).toFixed(0)} MiB storage-binding limit; splitting large tensors across bindings is not implemented yet`,
      );
  const kernels: PlanKernel[] = sched.kernels.map((k, index) => {
    const alias = memory.inPlace.get(k.output);
    const g = generate(k, sched, target, opts.matmulTuning, alias);
    const bindings: PlanBinding[] = [{ binding: 0, slot: slot(k.output), write: true }];
    if (k.kind === "matmul") {
      bindings.push({ binding: 1, slot: slot(k.matmul!.a.base), write: false }, { binding: 2, slot: slot(k.matmul!.b.base), write: false });
      epilogueInputs(k).forEach((n, i) => bindings.push({ binding: 3 + i, slot: slot(n), write: false }));
    } else k.inputs.forEach((n, i) => {
      if (n !== alias) bindings.push({ binding: i + 1, slot: slot(n), write: false });
    });
    k.also?.forEach((n, m) => bindings.push({ binding: k.inputs.length + 1 + m, slot: slot(n), write: true }));
    const outs = [k.output, ...(k.also ?? [])];
    const spans = [k.matmul?.node, ...outs]
      .map((n) => (n ? model.graph.provenance.get(n.id) : undefined))
      .filter((x, i, all): x is Span => Boolean(x) && all.findIndex((y) => y && y.file === x!.file && y.start === x!.start) === i);
    const path = model.graph.instancePath.get((k.matmul?.node ?? k.output).id) ?? "";
    const bytes = [...outs, ...k.inputs].reduce((a, n) => a + numel(sched.shapes.get(n)!) * 4, 0);
    const label = k.chain ? (k.chain.kind === "softmax" ? "attention" : "kv-memory") : k.matmul ? `matmul${k.output === k.matmul.node ? "" : `+${k.output.op}`}` : k.row ? (k.row.softmax ? "softmax" : `row+${k.output.op}`) : outs.map((o) => o.op).join(",");
    return { index, kind: k.kind, label, wgsl: g.wgsl, workgroups: g.workgroups, bindings, spans, path, flops: flopsOf(k, sched), bytes, fused: k.fused, variant: g.variant ?? k.kind };
  });
  const tensor = (n: Node, name: string): PlanTensor => ({ name, slot: slot(n), shape: sched.shapes.get(n)!, dtype: n.dtype });
  const inputs = model.inputs.filter((i) => memory.slotOf.has(i.node)).map((i) => tensor(i.node, i.name));
  const params: PlanTensor[] = [];
  for (const n of sched.materialized) if (n.op === "param") params.push({ ...tensor(n, (n.attrs as { name: string }).name), transposed: sched.transposedParams.has(n) || undefined });
  return {
    model: model.name,
    dims,
    kernels,
    memory,
    inputs,
    params,
    outputs: rs.map((r) => tensor(r.node, r.name)),
    irNodes: sched.irNodes,
  };
}
