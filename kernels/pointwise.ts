import type { Node } from "../compiler/ir.ts";
import { numel } from "../compiler/tensor.ts";
import type { IxLike } from "./index-expr.ts";
import { loopEnd, type LoopTarget } from "./loop-end.ts";
import { f32Literal, Renderer, type RenderContext, resolveScalarLoads, tryVector, WGSL_HELPERS, wgslType } from "./render.ts";

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

/** `half`: inputs stored as f16 (frozen weights), declared so and widened where loaded (see RenderContext.half) */
export function bindingDecls(
  output: Node,
  outVar: string,
  inputs: readonly { node: Node; name: string; binding: number }[],
  half: ReadonlySet<Node> = new Set(),
): string {
  const lines = inputs.some((i) => half.has(i.node)) ? ["enable f16;"] : [];
  lines.push(`@group(0) @binding(0) var<storage, read_write> ${outVar}: array<${wgslType(output)}>;`);
  for (const i of inputs) lines.push(`@group(0) @binding(${i.binding}) var<storage, read> ${i.name}: array<${storageType(i.node, half)}>;`);
  return lines.join("\n");
}

/** The WGSL element type of a buffer: f16 for an input in `half`. */
export const storageType = (n: Node, half: ReadonlySet<Node> = new Set()): string => (half.has(n) ? "f16" : wgslType(n));

/** The WGSL helper functions the renderers of one module used, each once. */
export function helpersText(...renderers: Renderer[]): string {
  return [...new Set(renderers.flatMap((r) => [...r.helpers]))].map((h) => WGSL_HELPERS[h]).join("\n");
}

/**
 * A kernel's buffers: the output at binding 0 as `out0`, its inputs from 1 as `in1`, `in2`, …
 * An `aliased` input shares the output's buffer (an in-place kernel, see
 * compiler/memory-plan.ts): WebGPU forbids binding one buffer both writable and read-only
 * in a dispatch, so it gets no binding of its own (its number stays unused) and is read
 * from `out0`.
 */
export function kernelBuffers(
  output: Node,
  inputs: readonly Node[],
  aliased: ReadonlySet<Node> = new Set(),
  also: readonly Node[] = [],
  half: ReadonlySet<Node> = new Set(),
): { bufferVar: (n: Node) => string | undefined; decls: string } {
  const names = new Map(inputs.map((n, i) => [n, aliased.has(n) ? "out0" : `in${i + 1}`]));
  const bound = inputs.flatMap((n, i) => (aliased.has(n) ? [] : [{ node: n, name: `in${i + 1}`, binding: i + 1 }]));
  return { bufferVar: (n) => names.get(n), decls: [bindingDecls(output, "out0", bound, half), ...extraOutputDecls(also, inputs.length + 1)].join("\n") };
}

/** `out1`, `out2`, … for a kernel's further outputs, bound from `first` (see firstExtraOutputBinding). */
export function extraOutputDecls(also: readonly Node[], first: number): string[] {
  return also.map((n, m) => `@group(0) @binding(${first + m}) var<storage, read_write> out${m + 1}: array<${wgslType(n)}>;`);
}

/** What launch shapes depend on. */
export interface LaunchTarget extends LoopTarget {
  readonly maxWorkgroupsPerDim: number;
  /** a CPU adapter (lavapipe): workgroups are expensive, see `launch` */
  readonly isFallback: boolean;
  /** elementwise and reduce kernels may compute 4 elements per item with vec4 loads (default true) */
  readonly vec4?: boolean;
}

/** How a kernel of `total` independent items is dispatched. */
export interface Launch {
  readonly total: number;
  /** items per invocation, WORKGROUP apart */
  readonly items: number;
  readonly workgroups: readonly [number, number, number];
  /** the item loop stays rolled (see loopEnd) */
  readonly rolledLoops?: boolean;
}

const MAX_ITEMS = 16;
/** elementwise items' worth of work a CPU workgroup should get at most */
const GROUP_WORK = 4096;
/** workgroups to keep at least, so both cores stay busy and the tail is short */
const MIN_GROUPS = 16;

/**
 * On CPU adapters each workgroup has a fixed cost that dwarfs a cheap item (a 131k-element
 * add: 0.68 ms at one element per invocation, 0.25 ms at 8), so there each invocation
 * loops over several items: as many as keep MIN_GROUPS workgroups and about GROUP_WORK
 * work per workgroup. `cost`: one item's work in elementwise items (a reduction's
 * length), so heavy items stay one per invocation. Real GPUs want many small workgroups.
 */
export function launch(total: number, t: LaunchTarget, cost = 1): Launch {
  let items = 1;
  while (t.isFallback && items * 2 <= MAX_ITEMS && items * 2 * WORKGROUP * cost <= GROUP_WORK && Math.ceil(total / (items * 2 * WORKGROUP)) >= MIN_GROUPS)
    items *= 2;
  return { total, items, workgroups: grid(Math.ceil(total / (WORKGROUP * items)), t.maxWorkgroupsPerDim), ...(t.rolledLoops ? { rolledLoops: true } : {}) };
}

/** The entry point: `body` computes item `lin` (< total), for each of the invocation's items. */
export function kernelMain(l: Launch, body: string): string {
  const head = `@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {`;
  const group = `(wid.y * ${l.workgroups[0]}u + wid.x)`;
  if (l.items === 1)
    return `${head}
  let lin = ${group} * ${WORKGROUP}u + lid;
  if (lin >= ${l.total}u) { return; }
${body}
}`;
  // Items WORKGROUP apart keep a subgroup's accesses contiguous; lin grows with the
  // item, so the first one past the end ends the invocation.
  return `${head}
  let lin0 = ${group} * ${WORKGROUP * l.items}u + lid;
  for (var item = 0u; item < ${loopEnd(l.items, l, "out0")}; item++) {
    let lin = lin0 + item * ${WORKGROUP}u;
    if (lin >= ${l.total}u) { return; }
${body.replace(/^(?=.)/gm, "  ")}
  }
}`;
}

/** What a kernel generated from an inline tree needs: its output, buffers, shapes and launch target. */
export interface KernelBody {
  readonly output: Node;
  readonly inputs: readonly Node[];
  readonly shapes: ReadonlyMap<Node, readonly number[]>;
  readonly target: LaunchTarget;
  /** run-time dims, for symbolic attributes (see RenderContext.dims) */
  readonly dims?: Readonly<Record<string, number>>;
  /** inputs that share the output's buffer, read (or written, a cache by write_slot) through it (see kernelBuffers) */
  readonly aliased?: ReadonlySet<Node>;
  /** further outputs of the output's shape, written in the same pass (see Kernel.also) */
  readonly also?: readonly Node[];
  /** inputs stored as f16 (frozen weights) */
  readonly half?: ReadonlySet<Node>;
}

function setup(k: KernelBody): { ctx: RenderContext; decls: string } {
  const { bufferVar, decls } = kernelBuffers(k.output, k.inputs, k.aliased, k.also, k.half);
  return { ctx: { shapes: k.shapes, bufferVar, dims: k.dims, ...(k.half?.size ? { half: k.half } : {}) }, decls };
}

/** The first of a vector-mode item's 4 elements (see RenderContext.vector). */
const LANE0 = "lane0";

/**
 * A kernel body computing 4 consecutive elements per item with vec4 loads and stores
 * (on lavapipe a lane's load is a gather either way, so one vec4 gather replaces four:
 * a 1M-element add ran 2.3x faster), or undefined when the output's innermost axis is
 * not a multiple of 4 or the tree reads something across the 4 (Unvectorizable).
 * `render` renders the body with the given context at the output index `idx` and
 * returns its text and renderers; the buffers any of them vector-loaded are declared as
 * vec4 arrays, the outputs always.
 */
function vectorized(
  k: KernelBody,
  render: (ctx: RenderContext, idx: readonly IxLike[]) => { body: string; renderers: Renderer[] },
): { decls: string; body: string; helpers: string } | undefined {
  const shape = k.shapes.get(k.output)!;
  if (k.target.vec4 === false || !shape.length || shape[shape.length - 1] % 4 !== 0) return undefined;
  const { ctx } = setup(k);
  const out = tryVector(() => render({ ...ctx, vector: LANE0 }, Renderer.delinear(LANE0, shape)));
  if (!out) return undefined;
  const { decls, vec4 } = vectorDecls(k.output, k.inputs, out.renderers, k.aliased, k.also, k.half);
  return { decls, body: `  let ${LANE0} = lin * 4u;\n${resolveScalarLoads(out.body, vec4)}`, helpers: helpersText(...out.renderers) };
}

/**
 * kernelBuffers' declarations for a vector-mode kernel: the outputs as arrays of vec4,
 * each input as one where `renderers` vector-loaded it. `vec4`: the names so declared
 * (for resolveScalarLoads).
 */
export function vectorDecls(
  output: Node,
  inputs: readonly Node[],
  renderers: readonly Renderer[],
  aliased: ReadonlySet<Node> = new Set(),
  also: readonly Node[] = [],
  half: ReadonlySet<Node> = new Set(),
): { decls: string; vec4: Set<string> } {
  const vec4 = new Set(["out0", ...renderers.flatMap((r) => [...r.vectorLoads])]);
  const decls = inputs.some((n) => half.has(n) && !aliased.has(n)) ? ["enable f16;"] : [];
  decls.push(`@group(0) @binding(0) var<storage, read_write> out0: array<vec4<${wgslType(output)}>>;`);
  inputs.forEach((n, i) => {
    if (aliased.has(n)) return;
    const name = `in${i + 1}`;
    const type = storageType(n, half);
    decls.push(`@group(0) @binding(${i + 1}) var<storage, read> ${name}: array<${vec4.has(name) ? `vec4<${type}>` : type}>;`);
  });
  also.forEach((n, m) => decls.push(`@group(0) @binding(${inputs.length + 1 + m}) var<storage, read_write> out${m + 1}: array<vec4<${wgslType(n)}>>;`));
  return { decls: decls.join("\n"), vec4 };
}

/**
 * One item per output element: the whole inline tree evaluated at that index. An
 * in-place kernel (an `aliased` input) is the variant "elementwise in-place".
 */
export function elementwiseKernel(k: KernelBody): GeneratedKernel & { variant?: string } {
  const shape = k.shapes.get(k.output)!;
  // The outputs are materialized; render their definitions, not loads of themselves.
  // One renderer for all of them: values they share are computed once.
  const outs = [k.output, ...(k.also ?? [])];
  const render = (ctx: RenderContext, idx: readonly IxLike[]) => {
    const r = new Renderer(ctx);
    const vs = outs.map((o) => r.value(o, idx));
    const store = (v: string, m: number) => (ctx.vector ? r.splat(v, wgslType(outs[m])) : v);
    return { body: `${r.lines.join("\n")}\n${vs.map((v, m) => `  out${m}[lin] = ${store(v, m)};`).join("\n")}`, renderers: [r] };
  };
  const vec = vectorized(k, render);
  const variant = `elementwise${outs.length > 1 ? ` ×${outs.length}` : ""}${k.aliased?.size ? " in-place" : ""}${vec ? " vec4" : ""}`;
  if (vec) {
    const l = launch(numel(shape) / 4, k.target, 4);
    return { wgsl: `${vec.decls}\n${vec.helpers}\n${kernelMain(l, vec.body)}\n`, workgroups: l.workgroups, variant };
  }
  const { ctx, decls } = setup(k);
  const l = launch(numel(shape), k.target);
  const scalar = render(ctx, Renderer.delinear("lin", shape));
  return { wgsl: `${decls}\n${helpersText(...scalar.renderers)}\n${kernelMain(l, scalar.body)}\n`, workgroups: l.workgroups, variant };
}

/** One item per output element, looping over the reduced axis (its input inlined). */
export function reduceKernel(k: KernelBody): GeneratedKernel & { variant: string } {
  const out = k.output;
  const axis = (out.attrs as { axis: number }).axis;
  const inShape = k.shapes.get(out.src[0])!;
  const shape = k.shapes.get(out)!;
  const n = inShape[axis];
  const isMax = out.op === "rmax";
  // Accumulate in the output's own type (an i32 sum stays i32, as in the interpreter).
  // rmax starts at -inf, not -FLT_MAX: a row of -inf (fully masked) must reduce to -inf.
  const type = wgslType(out);
  const init = !isMax ? `${type}(0)` : type === "i32" ? "i32(-2147483647 - 1)" : f32Literal(-Infinity);
  const render = (ctx: RenderContext, idx: readonly IxLike[]) => {
    const at = idx.map((e, i) => (i === axis ? "r" : e));
    // A reduction across a concat's parts (DEHVF's mix of all ViT layers) loops over each
    // part on its own, reading it directly instead of branching per element.
    const probe = new Renderer(ctx, "    ", "w");
    probe.value(out.src[0], at);
    const cuts = [...(probe.concatSplits.get("r") ?? [])].filter((c) => c > 0 && c < n).sort((a, b) => a - b);
    const segments = [0, ...cuts].map((lo, j) => [lo, [...cuts, n][j]] as const);
    const loops = segments.map(([lo, hi]) => {
      const inner = cuts.length ? new Renderer({ ...ctx, ranges: new Map([["r", [lo, hi] as const]]) }, "    ", "w") : probe;
      const v = inner.value(out.src[0], at);
      const term = ctx.vector ? inner.splat(v, type) : v;
      return {
        inner,
        text: `  for (var r = ${lo}u; r < ${loopEnd(hi, k.target, "out0")}; r++) {
${inner.lines.join("\n")}
    acc = ${isMax ? `max(acc, ${term})` : `acc + ${term}`};
  }`,
      };
    });
    if (init.includes("nonfinite_bits")) loops[0].inner.helpers.add("nonfinite_");
    return {
      body: `  var acc: ${ctx.vector ? `vec4<${type}>` : type} = ${ctx.vector ? `vec4<${type}>(${init})` : init};
${loops.map((x) => x.text).join("\n")}
  out0[lin] = acc;`,
      renderers: loops.map((x) => x.inner),
    };
  };
  const vec = vectorized(k, render);
  if (vec) {
    const l = launch(numel(shape) / 4, k.target, 4 * n);
    return { wgsl: `${vec.decls}\n${vec.helpers}\n${kernelMain(l, vec.body)}\n`, workgroups: l.workgroups, variant: "reduce vec4" };
  }
  const { ctx, decls } = setup(k);
  const l = launch(numel(shape), k.target, n);
  const scalar = render(ctx, Renderer.delinear("lin", shape));
  return { wgsl: `${decls}\n${helpersText(...scalar.renderers)}\n${kernelMain(l, scalar.body)}\n`, workgroups: l.workgroups, variant: "reduce" };
}
