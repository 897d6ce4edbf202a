import type { Node } from "../compiler/ir.ts";
import type { RowKernel } from "../compiler/schedule.ts";
import { numel } from "../compiler/tensor.ts";
import { loopEnd, type LoopTarget } from "./loop-end.ts";
import { type KernelTarget, subgroupsUsable } from "./matmul.ts";
import { type GeneratedKernel, grid, helpersText, kernelBuffers, kernelMain, launch, vectorDecls } from "./pointwise.ts";
import { f32Literal, Renderer, resolveScalarLoads, tryVector, wgslType } from "./render.ts";

/**
 * How a row kernel spreads a row over invocations:
 *   thread     one invocation per row (rows are many and short, or no better option);
 *   subgroup   one subgroup per row, lanes striding the row, reductions with
 *              subgroupAdd/Max: the workgroup is exactly one subgroup, so lanes read
 *              consecutive elements and no barrier is needed (CPU adapters, where a
 *              barrier is a coroutine switch);
 *   workgroup  one workgroup per row, reductions through workgroup memory (real GPUs,
 *              where a thread per row leaves most of the device idle and uncoalesced).
 */
export type RowStrategy = "thread" | "subgroup" | "workgroup";

export interface RowTarget extends KernelTarget {
  /** force a strategy (tests run every one on whatever adapter they have) */
  readonly rowStrategy?: RowStrategy;
  /** thread-per-row kernels may step rows in vec4s (default true; see rowBody) */
  readonly vec4?: boolean;
}

/** Rows shorter than this gain nothing from splitting across invocations. */
const MIN_SPLIT = 32;

export function chooseRowStrategy(n: number, t: RowTarget): RowStrategy {
  if (t.rowStrategy === "subgroup" && !subgroupsUsable(t)) throw new Error("row kernels: the subgroup strategy needs an adapter with one fixed subgroup size");
  if (t.rowStrategy) return t.rowStrategy;
  // On lavapipe a subgroup per row measured slower (a 2×4×257×257 softmax: 2.16 vs 1.77 ms,
  // LayerNorm 2×257×128: 0.72 vs 0.66 ms): every lane-dependent load is a scalar load
  // either way, and one row per invocation needs no cross-lane reduction.
  if (n < MIN_SPLIT || t.isFallback) return "thread";
  return "workgroup";
}

/** Workgroup size for the workgroup strategy: a power of two near the row length. */
function workgroupWidth(n: number, t: KernelTarget): number {
  let w = 1;
  while (w * 2 <= Math.min(256, t.maxInvocations) && w < n) w *= 2;
  return w;
}

/**
 * A row group (see compiler/row-group.ts): for each reduction in order, one pass over the
 * row accumulating it (earlier reductions are scalars by then), then one pass writing the
 * output. Everything between is recomputed per pass from cached loads, never stored.
 */
/** `half`: inputs stored as f16 (frozen weights: an embedding gathered before a norm), widened as loaded */
export function rowKernel(
  k: RowKernel,
  shapes: ReadonlyMap<Node, readonly number[]>,
  target: RowTarget,
  dims: Readonly<Record<string, number>>,
  half: ReadonlySet<Node> = new Set(),
): GeneratedKernel & { variant: string } {
  const shape = shapes.get(k.output)!;
  const axis = k.row.axis;
  const n = shape[axis];
  const rows = numel(shape) / n;
  const strategy = chooseRowStrategy(n, target);
  const width = strategy === "thread" ? 1 : strategy === "subgroup" ? target.subgroupSize : workgroupWidth(n, target);
  if (strategy === "thread") {
    const l = launch(rows, target, (k.row.reductions.length + 1) * n);
    // along the innermost axis in steps of 4: vec4 loads (see RenderContext.vector)
    const v =
      target.vec4 !== false && axis === shape.length - 1 && n % 4 === 0
        ? tryVector(() => rowBody(k, shapes, dims, strategy, width, true, half, target))
        : undefined;
    if (v) {
      const { decls, vec4 } = vectorDecls(k.output, k.inputs, v.renderers, undefined, undefined, half);
      return {
        wgsl: `${decls}\n${helpersText(...v.renderers)}\n${kernelMain(l, resolveScalarLoads(v.body, vec4))}\n`,
        workgroups: l.workgroups,
        variant: "row-thread vec4",
      };
    }
    const { body, renderers } = rowBody(k, shapes, dims, strategy, width, false, half, target);
    return {
      wgsl: `${kernelBuffers(k.output, k.inputs, undefined, undefined, half).decls}\n${helpersText(...renderers)}\n${kernelMain(l, body)}\n`,
      workgroups: l.workgroups,
      variant: "row-thread",
    };
  }
  const { decls } = kernelBuffers(k.output, k.inputs, undefined, undefined, half);
  const { body, renderers, types } = rowBody(k, shapes, dims, strategy, width, false, half, target);
  const helpers = helpersText(...renderers);
  const workgroups = grid(rows, target.maxWorkgroupsPerDim);
  const lane = strategy === "subgroup" ? "@builtin(subgroup_invocation_id) lane: u32" : "@builtin(local_invocation_index) lane: u32";
  const shared = strategy === "workgroup" ? [...types].map((t) => `var<workgroup> red_${t}: array<${t}, ${width}>;`).join("\n") : "";
  // the row is the workgroup's, so the early exit and every reduction stay uniform
  const wgsl = `${strategy === "subgroup" ? "enable subgroups;\n" : ""}${decls}
${helpers}
${shared}
@compute @workgroup_size(${width})
fn main(@builtin(workgroup_id) wid: vec3<u32>, ${lane}) {
  let lin = wid.y * ${workgroups[0]}u + wid.x;
  if (lin >= ${rows}u) { return; }
${body}
}
`;
  return { wgsl, workgroups, variant: `row-${strategy}` };
}

/**
 * The passes of a row kernel for row `lin`: each reduction, then the write. `vector`
 * (thread strategy, innermost axis, length a multiple of 4): the loops step 4 elements
 * at a time in vec4s, and each reduction's 4 partial results combine at the end (so sums
 * are added in another order than the scalar kernel's).
 */
function rowBody(
  k: RowKernel,
  shapes: ReadonlyMap<Node, readonly number[]>,
  dims: Readonly<Record<string, number>>,
  strategy: RowStrategy,
  width: number,
  vector: boolean,
  half: ReadonlySet<Node>,
  t: LoopTarget,
): { body: string; renderers: Renderer[]; types: Set<string> } {
  const shape = shapes.get(k.output)!;
  const axis = k.row.axis;
  const n = shape[axis];
  const reductions = k.row.reductions;
  const { bufferVar } = kernelBuffers(k.output, k.inputs);
  const j = vector ? "vj" : "j";
  // the row's other indices from lin, j along the axis
  const row = Renderer.delinear(
    "lin",
    shape.filter((_, i) => i !== axis),
  );
  const at = [...row.slice(0, axis), j, ...row.slice(axis)];
  const outAt = vector ? `(${Renderer.linear(at, shape)}) / 4u` : Renderer.linear(at, shape);
  const given = new Map<Node, string>();
  const renderers: Renderer[] = [];
  const end = loopEnd(n, t, "out0");
  const loop = vector
    ? `for (var vj = 0u; vj < ${end}; vj += 4u)`
    : strategy === "thread"
      ? `for (var j = 0u; j < ${end}; j++)`
      : `for (var j = lane; j < ${end}; j += ${width}u)`;
  const ctx = { shapes, bufferVar, dims, ...(vector ? { vector: j } : {}), ...(half.size ? { half } : {}) };
  const types = new Set<string>();
  const rescaled = rescaledSummand(k.output, reductions, axis, shapes);
  const passes = reductions.map((r, i) => {
    const ren = new Renderer({ ...ctx, given: new Map(given) }, "    ", `p${i}_`);
    renderers.push(ren);
    const type = wgslType(r);
    const v = vector ? ren.splat(ren.value(r.src[0], at), type) : ren.value(r.src[0], at);
    types.add(type);
    const isMax = r.op === "rmax";
    // rmax starts at -inf: a fully masked row (all -inf) must reduce to -inf
    const init = !isMax ? `${type}(0)` : type === "i32" ? "i32(-2147483647 - 1)" : f32Literal(-Infinity);
    if (init.includes("nonfinite_bits")) ren.helpers.add("nonfinite_");
    const name = `red${i}`;
    given.set(r, name);
    const acc = vector ? `  var acc${i}: vec4<${type}> = vec4<${type}>(${init});` : `  var acc${i}: ${type} = ${init};`;
    const op = (a: string, b: string) => (isMax ? `max(${a}, ${b})` : `${a} + ${b}`);
    const combined = vector
      ? `  let ${name} = ${isMax ? `max(max(acc${i}.x, acc${i}.y), max(acc${i}.z, acc${i}.w))` : `acc${i}.x + acc${i}.y + acc${i}.z + acc${i}.w`};`
      : combine(strategy, name, `acc${i}`, type, isMax, width);
    return `${acc}
  ${loop} {
${ren.lines.join("\n")}
    acc${i} = ${op(`acc${i}`, v)};${r === rescaled?.sum ? `\n    out0[${outAt}] = ${v};` : ""}
  }
${combined}`;
  });
  const fin = new Renderer({ ...ctx, given }, "    ", "o_");
  renderers.push(fin);
  const type = wgslType(k.output);
  const plain = () => {
    const v = fin.value(k.output, at);
    return vector ? fin.splat(v, type) : v;
  };
  const value = rescaled
    ? `out0[${outAt}] * ${fin.value(
        rescaled.factor,
        at.map((e, i) => (i === axis ? "0u" : e)),
      )}`
    : plain();
  const write = `${loop} {
${fin.lines.join("\n")}
    out0[${outAt}] = ${value};
  }`;
  return { body: `${passes.join("\n")}\n  ${write}`, renderers, types };
}

/** `let name` = the row's reduction of every invocation's partial `acc`. */
function combine(strategy: RowStrategy, name: string, acc: string, type: string, isMax: boolean, width: number): string {
  if (strategy === "thread") return `  let ${name} = ${acc};`;
  if (strategy === "subgroup") return `  let ${name} = ${isMax ? "subgroupMax" : "subgroupAdd"}(${acc});`;
  const buf = `red_${type}`;
  const op = (a: string, b: string) => (isMax ? `max(${a}, ${b})` : `${a} + ${b}`);
  return `  ${buf}[lane] = ${acc};
  workgroupBarrier();
  for (var h = ${width >> 1}u; h > 0u; h = h >> 1u) {
    if (lane < h) { ${buf}[lane] = ${op(`${buf}[lane]`, `${buf}[lane + h]`)}; }
    workgroupBarrier();
  }
  let ${name} = ${buf}[0];
  workgroupBarrier();`;
}

/**
 * `out = E · g(row)` where E is the summand of the last reduction (softmax: exp(s - max)
 * divided by its sum): the sum pass then stores E as it goes and the last pass only
 * scales it, instead of recomputing E (an exp per element) from the inputs.
 */
function rescaledSummand(
  out: Node,
  reductions: readonly Node[],
  axis: number,
  shapes: ReadonlyMap<Node, readonly number[]>,
): { sum: Node; factor: Node } | undefined {
  const sum = reductions.at(-1);
  if (!sum || sum.op !== "sum" || out.op !== "mul" || out.dtype !== "f32") return undefined;
  const [a, b] = out.src;
  const other = a === sum.src[0] ? b : b === sum.src[0] ? a : undefined;
  if (!other || other.op !== "expand" || shapes.get(other.src[0])![axis] !== 1) return undefined;
  return { sum, factor: other.src[0] };
}
