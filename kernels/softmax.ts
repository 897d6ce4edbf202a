import type { Node } from "../compiler/ir.ts";
import type { Kernel } from "../compiler/schedule.ts";
import { numel } from "../compiler/tensor.ts";
import { bindingDecls, type GeneratedKernel, grid, WORKGROUP } from "./pointwise.ts";
import { f32Literal, Renderer, WGSL_HELPERS } from "./render.ts";

/**
 * softmax(S) over the last axis, one invocation per row: the row max, the sum of
 * exp(s - max), then exp(s - max) / sum written out. S is rendered inline (usually a
 * load of the scaled, masked scores) and read three times from cache.
 */
export function softmaxKernel(k: Kernel, shapes: ReadonlyMap<Node, readonly number[]>, maxWorkgroupsPerDim: number, dims: Readonly<Record<string, number>>): GeneratedKernel & { variant: string } {
  const shape = shapes.get(k.output)!;
  const n = shape[shape.length - 1];
  const rows = numel(shape.slice(0, -1));
  const wg = grid(Math.ceil(rows / WORKGROUP), maxWorkgroupsPerDim);
  const names = new Map(k.inputs.map((x, i) => [x, `in${i + 1}`]));
  const row = Renderer.delinear("lin", shape.slice(0, -1));
  const ren = new Renderer({ shapes, bufferVar: (x) => names.get(x), dims }, "    ", "s");
  const s = ren.value(k.scores!, [...row, "j"]);
  const body = ren.lines.join("\n");
  const ninf = f32Literal(-Infinity);
  const helpers = new Set([...ren.helpers, "nonfinite_"]);
  const wgsl = `${bindingDecls(k.output, "out0", k.inputs.map((x, i) => ({ node: x, name: `in${i + 1}`, binding: i + 1 })))}
${[...helpers].map((h) => WGSL_HELPERS[h]).join("\n")}
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let lin = (wid.y * ${wg[0]}u + wid.x) * ${WORKGROUP}u + lid;
  if (lin >= ${rows}u) { return; }
  var m = ${ninf};
  for (var j = 0u; j < ${n}u; j++) {
${body}
    m = max(m, ${s});
  }
  var l = 0.0;
  for (var j = 0u; j < ${n}u; j++) {
${body}
    l += exp(${s} - m);
  }
  let inv = 1.0 / l;
  for (var j = 0u; j < ${n}u; j++) {
${body}
    out0[lin * ${n}u + j] = exp(${s} - m) * inv;
  }
}
`;
  return { wgsl, workgroups: wg, variant: "row-softmax" };
}
