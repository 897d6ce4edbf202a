import type { Node } from "../compiler/ir.ts";
import { numel } from "../compiler/tensor.ts";
import { type GeneratedKernel, helpersText, kernelBuffers, kernelMain, type KernelBody, launch } from "./pointwise.ts";
import { Renderer } from "./render.ts";

/**
 * `write_slot(old, x, pos)` along `axis`. In place (old shares the output's buffer): one
 * item per element of x, stored at its row's position; a decode step then moves one slot
 * of the cache instead of all C. Otherwise one item per output element, x's where the
 * index along `axis` is the row's position, old's elsewhere. A position outside the cache
 * writes nothing (the host checks positions before a step). `k.output` is the write_slot
 * node; `k.aliased` holds the cache when the memory plan gave the output its buffer.
 */
export function writeSlotKernel(k: KernelBody): GeneratedKernel & { variant: string } {
  const n = k.output as Node<"write_slot">;
  const [old, x, pos] = n.src;
  const axis = n.attrs.axis;
  const shape = k.shapes.get(n)!;
  const inPlace = k.aliased?.has(old) ?? false;
  const space = inPlace ? k.shapes.get(x)! : shape;
  const { bufferVar, decls } = kernelBuffers(n, k.inputs, k.aliased);
  const r = new Renderer({ shapes: k.shapes, bufferVar, dims: k.dims });
  const idx = Renderer.delinear("lin", space);
  const p = r.value(pos, [idx[0]]);
  let store: string;
  if (inPlace) {
    const v = r.value(x, idx);
    const at = Renderer.linear(
      idx.map((e, i) => (i === axis ? "u32(slot)" : e)),
      shape,
    );
    store = `  let slot = ${p};\n  if (slot >= 0 && slot < ${shape[axis]}) { out0[${at}] = ${v}; }`;
  } else {
    const v = r.value(
      x,
      idx.map((e, i) => (i === axis ? "0u" : e)),
    );
    const kept = r.value(old, idx);
    store = `  out0[lin] = select(${kept}, ${v}, i32(${idx[axis]}) == ${p});`;
  }
  const l = launch(numel(space), k.target);
  return {
    wgsl: `${decls}\n${helpersText(r)}\n${kernelMain(l, `${r.lines.join("\n")}\n${store}`)}\n`,
    workgroups: l.workgroups,
    variant: inPlace ? "write-slot in-place" : "write-slot",
  };
}
