import type { Node } from "../compiler/ir.ts";
import type { Kernel } from "../compiler/schedule.ts";
import { numel } from "../compiler/tensor.ts";
import { type GeneratedKernel, helpersText, kernelBuffers, kernelMain, launch, type LaunchTarget } from "./pointwise.ts";
import { f32Literal, Renderer } from "./render.ts";

/**
 * softmax(S) over the last axis, one item (see `launch`) per row: the row max, the sum of
 * exp(s - max), then exp(s - max) / sum written out. S is rendered inline (usually a
 * load of the scaled, masked scores) and read three times from cache.
 */
export function softmaxKernel(k: Kernel, shapes: ReadonlyMap<Node, readonly number[]>, target: LaunchTarget, dims: Readonly<Record<string, number>>): GeneratedKernel & { variant: string } {
  const shape = shapes.get(k.output)!;
  const n = shape[shape.length - 1];
  const rows = numel(shape.slice(0, -1));
  const l = launch(rows, target, 3 * n);
  const { bufferVar, decls } = kernelBuffers(k.output, k.inputs);
  const row = Renderer.delinear("lin", shape.slice(0, -1));
  const ren = new Renderer({ shapes, bufferVar, dims }, "    ", "s");
  const s = ren.value(k.scores!, [...row, "j"]);
  const body = ren.lines.join("\n");
  const ninf = f32Literal(-Infinity);
  ren.helpers.add("nonfinite_");
  const wgsl = `${decls}
${helpersText(ren)}
${kernelMain(
  l,
  `  var m = ${ninf};
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
  }`,
)}
`;
  return { wgsl, workgroups: l.workgroups, variant: "row-softmax" };
}
