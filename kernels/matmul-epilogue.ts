import type { Node } from "../compiler/ir.ts";
import { epilogueInputs, firstExtraOutputBinding, type MatmulKernel, type StridedView } from "../compiler/schedule.ts";
import { generateMatmul, type KernelTarget, type MatmulSpec, type OperandTexture, resolveMatmulOptions } from "./matmul.ts";
import { matmulKey, type MatmulTuning } from "./matmul-tuning.ts";
import { extraOutputDecls, type GeneratedKernel, helpersText, storageType } from "./pointwise.ts";
import { Renderer, resolveScalarLoads, tryVector, wgslType } from "./render.ts";

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
 * `textureB`: B is constant while the plan runs (a frozen weight), so it may be read from
 * a texture the caller fills once ("sg-texture", where the target's choice picks it); the
 * result then names the texture's layout in `bTexture`. `half`: buffers holding f16 (frozen
 * weights, see lowering/plan.ts halfWeights), B or epilogue inputs; widened as loaded.
 */
export function matmulKernel(
  k: MatmulKernel,
  shapes: ReadonlyMap<Node, readonly number[]>,
  target: KernelTarget & { readonly vec4?: boolean },
  dims: Readonly<Record<string, number>> = {},
  tuning?: MatmulTuning,
  textureB = false,
  half: ReadonlySet<Node> = new Set(),
): GeneratedKernel & { variant: string; bTexture?: OperandTexture } {
  const mm = k.matmul;
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
    b: { ...operand(mm.b, shapes.get(mm.node.src[1])!, batchShape), ...(half.has(mm.b.base) ? { half: true } : {}) },
  };
  const spec = mm.sumAxis === undefined ? full : foldSumIntoK(full, mm.sumAxis);
  // a folded sum is the whole output: nothing to apply
  const plain = k.output === mm.node || mm.sumAxis !== undefined;
  // texture kernels are not autotuned (and not looked up, so the tuner never times them):
  // its candidates bind a storage buffer at 2, and a tuned entry would swap the kernel
  // without the plan's binding following
  const texture = textureB && resolveMatmulOptions(spec, target, { allowTexture: true }).variant === "sg-texture";
  const extras = epilogueInputs(k);
  const names = new Map(extras.map((n, i) => [n, `ep${3 + i}`]));
  const also = plain ? [] : (k.also ?? []);
  const idx = [...Renderer.delinear("b", batchShape), "i", "j"];
  const at = `b * ${spec.M * spec.N}u + i * ${spec.N}u + j`;
  /** the epilogue function: `vec` renders epilogue4 over columns j..j+3 (throws Unvectorizable when it cannot) */
  const render = (vec: boolean): { fn: string; decls: string; helpers: string } => {
    const [t, fn] = vec ? ["vec4<f32>", "epilogue4"] : ["f32", "epilogue"];
    const head = `fn ${fn}(acc: ${t}, b: u32, i: u32, j: u32) -> ${t} {`;
    const ren = new Renderer({
      shapes,
      bufferVar: (n) => names.get(n),
      given: new Map([[mm.node, "acc"]]),
      dims,
      ...(vec ? { vector: "j" } : {}),
      ...(half.size ? { half } : {}),
    });
    if (vec) ren.vectorVariable("acc");
    const v = plain ? "acc" : ren.value(k.output, idx);
    const stores = also.map((o, m) => `  out${m + 1}[${vec ? `(${at}) / 4u` : at}] = ${vec ? ren.splat(ren.value(o, idx), wgslType(o)) : ren.value(o, idx)};`);
    const body = `${head}\n${[...ren.lines, ...stores].join("\n")}\n  return ${vec ? ren.splat(v, "f32") : v};\n}`;
    const vec4 = new Set(vec ? ren.vectorLoads : []);
    const decls = [
      ...extras.map(
        (n, i) =>
          `@group(0) @binding(${3 + i}) var<storage, read> ep${3 + i}: array<${vec4.has(`ep${3 + i}`) ? `vec4<${storageType(n, half)}>` : storageType(n, half)}>;`,
      ),
      ...(vec
        ? also.map((n, m) => `@group(0) @binding(${firstExtraOutputBinding(k) + m}) var<storage, read_write> out${m + 1}: array<vec4<${wgslType(n)}>>;`)
        : extraOutputDecls(also, firstExtraOutputBinding(k))),
    ].join("\n");
    return { fn: vec ? resolveScalarLoads(body, vec4) : body, decls, helpers: helpersText(ren) };
  };
  const vector = spec.N % 4 === 0 && target.vec4 !== false ? tryVector(() => render(true)) : undefined;
  const gen = generateMatmul(spec, target, texture ? { allowTexture: true } : tuning?.get(matmulKey(spec, plain ? "none" : k.output.op)), vector !== undefined);
  const epi = gen.vec4Epilogue ? vector! : render(false);
  // the directive leads the module; the generator wrote one already when B is f16
  const enable = extras.some((n) => half.has(n)) && !half.has(mm.b.base) ? "enable f16;\n" : "";
  return {
    wgsl: `${enable}${gen.wgsl}\n${epi.decls}\n${epi.helpers}\n${epi.fn}\n`,
    workgroups: gen.workgroups,
    variant: gen.variant,
    ...(gen.bTexture ? { bTexture: gen.bTexture } : {}),
  };
}
