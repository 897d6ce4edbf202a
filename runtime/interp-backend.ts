import { type Dim, dimEval, shapeEval } from "../compiler/dims.ts";
import type { CompiledModel } from "../compiler/elaborate.ts";
import { topoOrder } from "../compiler/graph.ts";
import { interpret } from "../compiler/interpret.ts";
import { initParam } from "../compiler/param-init.ts";
import { seededRng } from "../util/rng.ts";
import { numel, type Tensor } from "../compiler/tensor.ts";
import { sourcedParams, streamSourced } from "../io/checkpoints/load.ts";

export interface RunOptions {
  readonly seed: number;
  readonly dims: Readonly<Record<string, number>>;
  /** replaces synthetic inputs by name */
  readonly inputs?: ReadonlyMap<string, Tensor>;
}

/**
 * Every parameter a checkpoint does not provide, from its init rule (float64). Parameters
 * with a `from "..."` source are left out: the GPU path streams them (runtime/param-upload.ts),
 * the interpreter reads them with loadAllParams.
 */
export function initAllParams(model: CompiledModel, seed: number): Map<string, Tensor> {
  return new Map(model.params.filter((p) => !p.source).map((p) => [p.name, initParam(p.name, p.shape, p.init, seed)]));
}

/** Every parameter as float64, checkpoint tensors included: for the reference interpreter (small models). */
export async function loadAllParams(model: CompiledModel, seed: number): Promise<Map<string, Tensor>> {
  const params = initAllParams(model, seed);
  for await (const p of streamSourced(sourcedParams(model.params))) params.set(p.name, { shape: [...p.shape], data: Float64Array.from(p.data) });
  return params;
}

/** Upper bound for synthetic ids: the smallest table any gather indexes with this input. */
function idBound(model: CompiledModel, inputName: string, env: Readonly<Record<string, number>>): number {
  let bound = Infinity;
  for (const n of topoOrder(model.outputs.map((o) => o.node)))
    if (n.op === "gather" && n.src[1].op === "input" && (n.src[1].attrs as { name: string }).name === inputName)
      bound = Math.min(bound, dimEval(n.src[0].shape[0] as Dim, env));
  return Number.isFinite(bound) ? bound : 2;
}

/** Deterministic synthetic batch: floats uniform in [0, 1), ids uniform over the vocabulary. */
export function syntheticInputs(model: CompiledModel, seed: number, dims: Readonly<Record<string, number>>): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const inp of model.inputs) {
    const shape = shapeEval(inp.shape, dims);
    const u = seededRng(seed, `input:${inp.name}`);
    const data = new Float64Array(numel(shape));
    if (inp.dtype === "i32") {
      const v = idBound(model, inp.name, dims);
      for (let i = 0; i < data.length; i++) data[i] = Math.floor(u() * v);
    } else for (let i = 0; i < data.length; i++) data[i] = u();
    out.set(inp.name, { shape, data });
  }
  return out;
}

export function runInterp(model: CompiledModel, params: ReadonlyMap<string, Tensor>, opts: RunOptions): Tensor[] {
  const inputs = new Map(syntheticInputs(model, opts.seed, opts.dims));
  for (const [k, v] of opts.inputs ?? []) inputs.set(k, v);
  return interpret(
    model.outputs.map((o) => o.node),
    { dims: opts.dims, inputs, params },
  );
}

/** A short fingerprint of a tensor: sums plus a hash of its float32-rounded values. */
export function checksum(t: Tensor): { sum: number; absMean: number; hash: string } {
  let sum = 0;
  let abs = 0;
  let h = 0x811c9dc5;
  const f = new Float32Array(1);
  const bits = new Uint32Array(f.buffer);
  for (const x of t.data) {
    sum += x;
    abs += Math.abs(x);
    f[0] = x;
    h = Math.imul(h ^ bits[0], 0x01000193) >>> 0;
  }
  return { sum, absMean: abs / Math.max(1, t.data.length), hash: h.toString(16).padStart(8, "0") };
}
