import type { Node } from "../compiler/ir.ts";
import type { AttentionKernel, StridedView } from "../compiler/schedule.ts";
import { numel } from "../compiler/tensor.ts";
import { type GeneratedKernel, grid, helpersText, kernelBuffers, kernelMain, launch, type LaunchTarget, WORKGROUP } from "./pointwise.ts";
import { Renderer } from "./render.ts";

/** Output columns one invocation accumulates in registers. */
const COLUMNS = 64;

/** `base[offset + Σ batch strides + r*rs + c*cs]` for a view, at batch index `b`. */
function at(name: string, v: StridedView, shape: readonly number[], batchShape: readonly number[], r: string, c: string): string {
  const rank = shape.length;
  let acc = 1;
  const terms: string[] = [String(v.offset) + "u"];
  for (let d = batchShape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && v.strides[d] !== 0) terms.push(`((b / ${acc}u) % ${batchShape[d]}u) * ${v.strides[d]}u`);
    acc *= batchShape[d];
  }
  terms.push(`${r} * ${v.strides[rank - 2]}u`, `${c} * ${v.strides[rank - 1]}u`);
  return `${name}[${terms.join(" + ")}]`;
}

/**
 * Chained matmuls in one pass, flash-attention style: one invocation per (batch, query
 * row, block of output columns) walks the keys once, computing each score as a dot
 * product, applying the scores' elementwise tree (scale, mask), then either an online
 * softmax (running max and sum, rescaling the accumulators) or a pointwise
 * activation, and accumulating score × value row. The scores never touch memory.
 */
/**
 * Real GPUs: a workgroup per query row with scores in workgroup memory. CPU adapters
 * (lavapipe): one invocation per row with an online softmax, since workgroup memory
 * and barriers are slow there (the row variant measured 3x slower, and minutes of
 * shader compilation).
 */
export function attentionKernel(
  k: AttentionKernel,
  shapes: ReadonlyMap<Node, readonly number[]>,
  target: { maxWorkgroupsPerDim: number; maxWorkgroupStorage: number; isFallback: boolean },
  dims: Readonly<Record<string, number>> = {},
): GeneratedKernel & { variant: string } {
  const keys = shapes.get(k.chain.first)!;
  if (!target.isFallback && (keys[keys.length - 1] + WORKGROUP) * 4 <= target.maxWorkgroupStorage)
    return rowKernel(k, shapes, target.maxWorkgroupsPerDim, dims);
  return onlineKernel(k, shapes, target, dims);
}

interface ChainParts {
  readonly batchShape: number[];
  readonly nb: number;
  readonly nq: number;
  readonly nk: number;
  readonly dk: number;
  readonly dv: number;
  readonly outShape: readonly number[];
  readonly qAt: (r: string, c: string) => string;
  readonly kAt: (r: string, c: string) => string;
  readonly vAt: (r: string, c: string) => string;
  readonly decls: string;
  readonly score: Renderer;
  readonly s: string;
  readonly epilogue: Renderer;
  readonly out: string;
  readonly helpers: string;
}

function parts(k: AttentionKernel, shapes: ReadonlyMap<Node, readonly number[]>, indent: string, dims: Readonly<Record<string, number>>): ChainParts {
  const chain = k.chain;
  const second = k.matmul.node;
  const outShape = shapes.get(second)!;
  const r = outShape.length;
  const batchShape = outShape.slice(0, r - 2);
  const qShape = shapes.get(chain.first.src[0])!;
  const kShape = shapes.get(chain.first.src[1])!;
  const vShape = shapes.get(second.src[1])!;
  const { bufferVar, decls } = kernelBuffers(k.output, k.inputs);
  const bidx = Renderer.delinear("b", batchShape);
  const score = new Renderer({ shapes, bufferVar, given: new Map([[chain.first, "dot"]]), dims }, indent, "s");
  const s = score.value(chain.scores, [...bidx, "i", "j"]);
  const epilogue = new Renderer({ shapes, bufferVar, given: new Map([[second, "res"]]), dims }, `${indent}  `, "e");
  const out = epilogue.value(k.output, [...bidx, "i", "col"]);
  return {
    batchShape,
    nb: numel(batchShape),
    nq: outShape[r - 2],
    nk: kShape[r - 1],
    dk: qShape[r - 1],
    dv: outShape[r - 1],
    outShape,
    qAt: (a, c) => at(bufferVar(chain.q.base)!, chain.q, qShape, batchShape, a, c),
    kAt: (a, c) => at(bufferVar(chain.k.base)!, chain.k, kShape, batchShape, a, c),
    vAt: (a, c) => at(bufferVar(chain.v.base)!, chain.v, vShape, batchShape, a, c),
    decls,
    score,
    s,
    epilogue,
    out,
    helpers: helpersText(score, epilogue),
  };
}

/**
 * One workgroup per query row: threads split the keys and leave the row's scores in
 * workgroup memory; softmax is two tree reductions (max, sum); then threads split the
 * output columns. No score is computed twice and every value read is shared.
 */
function rowKernel(
  k: AttentionKernel,
  shapes: ReadonlyMap<Node, readonly number[]>,
  maxWorkgroupsPerDim: number,
  dims: Readonly<Record<string, number>>,
): GeneratedKernel & { variant: string } {
  const P = parts(k, shapes, "    ", dims);
  const softmax = k.chain.kind === "softmax";
  const rows = P.nb * P.nq;
  const wg = grid(rows, maxWorkgroupsPerDim);
  const reduce = (op: (a: string, b: string) => string) => `  for (var h = ${WORKGROUP / 2}u; h > 0u; h = h >> 1u) {
    if (lid < h) { red[lid] = ${op("red[lid]", "red[lid + h]")}; }
    workgroupBarrier();
  }`;
  const wgsl = `${P.decls}
${P.helpers}
var<workgroup> p: array<f32, ${P.nk}>;
var<workgroup> red: array<f32, ${WORKGROUP}>;
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * ${wg[0]}u + wid.x;
  if (row >= ${rows}u) { return; }
  let i = row % ${P.nq}u;
  let b = row / ${P.nq}u;
  for (var j = lid; j < ${P.nk}u; j += ${WORKGROUP}u) {
    var dot = 0.0;
    for (var kk = 0u; kk < ${P.dk}u; kk++) { dot += ${P.qAt("i", "kk")} * ${P.kAt("kk", "j")}; }
${P.score.lines.join("\n")}
    p[j] = ${P.s};
  }
  workgroupBarrier();
${
  softmax
    ? `  var mx = -3.402823e38;
  for (var j = lid; j < ${P.nk}u; j += ${WORKGROUP}u) { mx = max(mx, p[j]); }
  red[lid] = mx;
  workgroupBarrier();
${reduce((a, b) => `max(${a}, ${b})`)}
  let m = red[0];
  workgroupBarrier();
  var sm = 0.0;
  for (var j = lid; j < ${P.nk}u; j += ${WORKGROUP}u) { let e = exp(p[j] - m); p[j] = e; sm += e; }
  red[lid] = sm;
  workgroupBarrier();
${reduce((a, b) => `${a} + ${b}`)}
  let l = red[0];`
    : "  let l = 1.0;"
}
  for (var col = lid; col < ${P.dv}u; col += ${WORKGROUP}u) {
    var acc = 0.0;
    for (var j = 0u; j < ${P.nk}u; j++) { acc += p[j] * ${P.vAt("j", "col")}; }
    let res = acc / l;
${P.epilogue.lines.join("\n")}
    out0[${Renderer.linear([...Renderer.delinear("b", P.batchShape), "i", "col"], P.outShape)}] = ${P.out};
  }
}
`;
  return { wgsl, workgroups: wg, variant: softmax ? "row-softmax" : "row-kv" };
}

function onlineKernel(
  k: AttentionKernel,
  shapes: ReadonlyMap<Node, readonly number[]>,
  target: LaunchTarget,
  dims: Readonly<Record<string, number>>,
): GeneratedKernel & { variant: string } {
  const P = parts(k, shapes, "    ", dims);
  const cols = Math.min(P.dv, COLUMNS);
  const blocks = Math.ceil(P.dv / cols);
  const l = launch(P.nb * P.nq * blocks, target, P.nk * (P.dk + cols));
  const softmax = k.chain.kind === "softmax";
  // the query row is reused for every key: keep it in registers when it is short
  const cacheQ = P.dk <= 256;
  const wgsl = `${P.decls}
${P.helpers}
${kernelMain(
  l,
  `  let blk = lin % ${blocks}u;
  let i = (lin / ${blocks}u) % ${P.nq}u;
  let b = lin / ${blocks * P.nq}u;
  var acc: array<f32, ${cols}>;
  var m = -3.402823e38;
  var l = 0.0;
${
  cacheQ
    ? `  var qrow: array<f32, ${P.dk}>;
  for (var kk = 0u; kk < ${P.dk}u; kk++) { qrow[kk] = ${P.qAt("i", "kk")}; }`
    : ""
}
  for (var j = 0u; j < ${P.nk}u; j++) {
    var dot = 0.0;
    for (var kk = 0u; kk < ${P.dk}u; kk++) {
      dot += ${cacheQ ? "qrow[kk]" : P.qAt("i", "kk")} * ${P.kAt("kk", "j")};
    }
${P.score.lines.join("\n")}
${
  softmax
    ? `    let mn = max(m, ${P.s});
    let scale = exp(m - mn);
    let p = exp(${P.s} - mn);
    l = l * scale + p;
    m = mn;`
    : `    let scale = 1.0;
    let p = ${P.s};`
}
    for (var c = 0u; c < ${cols}u; c++) {
      let col = min(blk * ${cols}u + c, ${P.dv - 1}u);
      acc[c] = acc[c] * scale + p * ${P.vAt("j", "col")};
    }
  }
  for (var c = 0u; c < ${cols}u; c++) {
    let col = blk * ${cols}u + c;
    if (col < ${P.dv}u) {
      let res = acc[c]${softmax ? " / l" : ""};
${P.epilogue.lines.join("\n")}
      out0[${Renderer.linear([...Renderer.delinear("b", P.batchShape), "i", "col"], P.outShape)}] = ${P.out};
    }
  }`,
)}
`;
  return { wgsl, workgroups: l.workgroups, variant: softmax ? "flash" : "kv-memory" };
}
