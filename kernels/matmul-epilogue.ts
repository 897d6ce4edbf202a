import type { Node } from "../compiler/ir.ts";
import { epilogueInputs, type Kernel, type StridedView } from "../compiler/schedule.ts";
import { generateMatmul, type KernelTarget, type MatmulSpec } from "./matmul.ts";
import { matmulKey, type MatmulTuning } from "./matmul-tuning.ts";
import { type GeneratedKernel, helpersText } from "./pointwise.ts";
import { Renderer, wgslType } from "./render.ts";

/** Strides of an operand view as the matmul generator wants them: batch dims broadcast with stride 0. */
function operand(v: StridedView, shape: readonly number[], batchShape: readonly number[]): MatmulSpec["a"] {
  const r = shape.length;
  return {
    offset: v.offset,
    batchStrides: batchShape.map((_, i) => (shape[i] === 1 ? 0 : v.strides[i])),
    rowStride: v.strides[r - 2],
    colStride: v.strides[r - 1],
  };
}

/**
 * Σ over batch axis `axis` as one matmul: that axis joins K (the scheduler checked with
 * foldableSum that the operands continue along k across it); C, the sum with the axis
 * kept as 1, has the layout of the remaining batch dims.
 */
function foldSumIntoK(s: MatmulSpec, axis: number): MatmulSpec {
  const drop = <T>(v: readonly T[]): T[] => v.filter((_, i) => i !== axis);
  const n = s.batchShape[axis];
  return {
    batchShape: drop(s.batchShape),
    M: s.M,
    N: s.N,
    K: s.K * n,
    a: { ...s.a, batchStrides: drop(s.a.batchStrides) },
    b: { ...s.b, batchStrides: drop(s.b.batchStrides) },
  };
}

/**
 * A matmul kernel whose store runs the consumer's elementwise tree (bias, activation,
 * residual, scale) with the accumulator in place of the matmul: one pass over C.
 * `tuning` may pin the kernel's configuration by matmulKey (else the cost model chooses).
 */
export function matmulKernel(k: Kernel, shapes: ReadonlyMap<Node, readonly number[]>, target: KernelTarget, dims: Readonly<Record<string, number>> = {}, tuning?: MatmulTuning): GeneratedKernel & { variant: string } {
  const mm = k.matmul!;
  const outShape = shapes.get(mm.node)!;
  const r = outShape.length;
  const batchShape = outShape.slice(0, r - 2);
  const K = shapes.get(mm.node.src[0])![r - 1];
  const full: MatmulSpec = {
    batchShape,
    M: outShape[r - 2],
    N: outShape[r - 1],
    K,
    a: operand(mm.a, shapes.get(mm.node.src[0])!, batchShape),
    b: operand(mm.b, shapes.get(mm.node.src[1])!, batchShape),
  };
  const spec = mm.sumAxis === undefined ? full : foldSumIntoK(full, mm.sumAxis);
  // a folded sum is the whole output: nothing to apply
  const plain = k.output === mm.node || mm.sumAxis !== undefined;
  const gen = generateMatmul(spec, target, tuning?.get(matmulKey(spec, plain ? "none" : k.output.op)));
  const extras = epilogueInputs(k);
  const names = new Map(extras.map((n, i) => [n, `ep${3 + i}`]));
  const decls = extras.map((n, i) => `@group(0) @binding(${3 + i}) var<storage, read> ep${3 + i}: array<${wgslType(n)}>;`).join("\n");
  let epilogue: string;
  let helpers = "";
  if (plain) epilogue = "fn epilogue(acc: f32, b: u32, i: u32, j: u32) -> f32 { return acc; }";
  else {
    const ren = new Renderer({ shapes, bufferVar: (n) => names.get(n), given: new Map([[mm.node, "acc"]]), dims });
    const idx = [...Renderer.delinear("b", batchShape), "i", "j"];
    const v = ren.value(k.output, idx);
    helpers = helpersText(ren);
    epilogue = `fn epilogue(acc: f32, b: u32, i: u32, j: u32) -> f32 {\n${ren.lines.join("\n")}\n  return ${v};\n}`;
  }
  return { wgsl: `${gen.wgsl}\n${decls}\n${helpers}\n${epilogue}\n`, workgroups: gen.workgroups, variant: gen.variant };
}

