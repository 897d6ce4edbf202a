import type { Node } from "../compiler/ir.ts";
import { numel } from "../compiler/tensor.ts";
import { f32Literal, Renderer, type RenderContext, WGSL_HELPERS, wgslType } from "./render.ts";

/** A generated compute shader plus how to launch it. */
export interface GeneratedKernel {
  readonly wgsl: string;
  readonly workgroups: readonly [number, number, number];
}

export const WORKGROUP = 64;

/** Spreads `groups` workgroups over x and y so neither exceeds the per-dimension limit. */
export function grid(groups: number, maxPerDim: number): [number, number, number] {
  const gx = Math.min(Math.max(groups, 1), maxPerDim);
  const gy = Math.ceil(Math.max(groups, 1) / gx);
  if (gy > maxPerDim) throw new Error(`kernel needs ${groups} workgroups, more than ${maxPerDim}² — too large for one dispatch`);
  return [gx, gy, 1];
}

export function bindingDecls(output: Node, outVar: string, inputs: readonly { node: Node; name: string; binding: number }[]): string {
  const lines = [`@group(0) @binding(0) var<storage, read_write> ${outVar}: array<${wgslType(output)}>;`];
  for (const i of inputs) lines.push(`@group(0) @binding(${i.binding}) var<storage, read> ${i.name}: array<${wgslType(i.node)}>;`);
  return lines.join("\n");
}

/** The WGSL helper functions the renderers of one module used, each once. */
export function helpersText(...renderers: Renderer[]): string {
  return [...new Set(renderers.flatMap((r) => [...r.helpers]))].map((h) => WGSL_HELPERS[h]).join("\n");
}

/** A kernel's buffers: the output at binding 0 as `out0`, its inputs from 1 as `in1`, `in2`, … */
export function kernelBuffers(output: Node, inputs: readonly Node[]): { bufferVar: (n: Node) => string | undefined; decls: string } {
  const names = new Map(inputs.map((n, i) => [n, `in${i + 1}`]));
  return { bufferVar: (n) => names.get(n), decls: bindingDecls(output, "out0", inputs.map((n, i) => ({ node: n, name: `in${i + 1}`, binding: i + 1 }))) };
}

/** Entry point of a one-invocation-per-item kernel: `lin` is the item, past `total` returns. */
export function entry(total: number, gx: number): string {
  return `@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let lin = (wid.y * ${gx}u + wid.x) * ${WORKGROUP}u + lid;
  if (lin >= ${total}u) { return; }`;
}

interface Body {
  readonly output: Node;
  readonly inputs: readonly Node[];
  readonly shapes: ReadonlyMap<Node, readonly number[]>;
  readonly maxWorkgroupsPerDim: number;
  /** run-time dims, for symbolic attributes (see RenderContext.dims) */
  readonly dims?: Readonly<Record<string, number>>;
}

function setup(k: Body): { ctx: RenderContext; decls: string } {
  const { bufferVar, decls } = kernelBuffers(k.output, k.inputs);
  return { ctx: { shapes: k.shapes, bufferVar, dims: k.dims }, decls };
}

/** One invocation per output element: the whole inline tree evaluated at that index. */
export function elementwiseKernel(k: Body): GeneratedKernel {
  const { ctx, decls } = setup(k);
  const shape = k.shapes.get(k.output)!;
  const total = numel(shape);
  const wg = grid(Math.ceil(total / WORKGROUP), k.maxWorkgroupsPerDim);
  const r = new Renderer(ctx);
  const idx = Renderer.delinear("lin", shape);
  // The output node itself is materialized; render its definition, not a load of itself.
  const v = r.value(k.output, idx);
  const wgsl = `${decls}
${helpersText(r)}
${entry(total, wg[0])}
${r.lines.join("\n")}
  out0[lin] = ${v};
}
`;
  return { wgsl, workgroups: wg };
}

/** One invocation per output element, looping over the reduced axis (its input inlined). */
export function reduceKernel(k: Body): GeneratedKernel {
  const { ctx, decls } = setup(k);
  const out = k.output;
  const axis = (out.attrs as { axis: number }).axis;
  const inShape = k.shapes.get(out.src[0])!;
  const shape = k.shapes.get(out)!;
  const total = numel(shape);
  const wg = grid(Math.ceil(total / WORKGROUP), k.maxWorkgroupsPerDim);
  const idx = Renderer.delinear("lin", shape);
  const inner = new Renderer(ctx, "    ", "w");
  const v = inner.value(out.src[0], idx.map((e, i) => (i === axis ? "r" : e)));
  const isMax = out.op === "rmax";
  // Accumulate in the output's own type (an i32 sum stays i32, as in the interpreter).
  // rmax starts at -inf, not -FLT_MAX: a row of -inf (fully masked) must reduce to -inf.
  const type = wgslType(out);
  const init = !isMax ? `${type}(0)` : type === "i32" ? "i32(-2147483647 - 1)" : f32Literal(-Infinity);
  if (init.includes("nonfinite_bits")) inner.helpers.add("nonfinite_");
  const wgsl = `${decls}
${helpersText(inner)}
${entry(total, wg[0])}
  var acc: ${type} = ${init};
  for (var r = 0u; r < ${inShape[axis]}u; r++) {
${inner.lines.join("\n")}
    acc = ${isMax ? `max(acc, ${v})` : `acc + ${v}`};
  }
  out0[lin] = acc;
}
`;
  return { wgsl, workgroups: wg };
}
