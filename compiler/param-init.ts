import type { InitRule } from "./ir.ts";
import { numel, type Tensor } from "./tensor.ts";
import { seededRng } from "../util/rng.ts";

function gaussian(u: () => number): () => number {
  return () => {
    const a = Math.max(u(), 1e-300);
    return Math.sqrt(-2 * Math.log(a)) * Math.cos(2 * Math.PI * u());
  };
}

/** Glorot: fan_out = shape[0], fan_in = product of the rest (conv-style weights flattened). */
function xavierBound(shape: readonly number[]): number {
  const fanOut = shape[0] ?? 1;
  const fanIn = shape.length > 1 ? numel(shape.slice(1)) : fanOut;
  return Math.sqrt(6 / (fanIn + fanOut));
}

export function initParam(name: string, shape: readonly number[], rule: InitRule, seed: number): Tensor {
  const data = new Float64Array(numel(shape));
  const u = seededRng(seed, name);
  switch (rule.kind) {
    case "zeros":
      break;
    case "ones":
      data.fill(1);
      break;
    case "const":
      data.fill(rule.value);
      break;
    case "normal": {
      const g = gaussian(u);
      for (let i = 0; i < data.length; i++) data[i] = rule.mean + rule.std * g();
      break;
    }
    case "uniform":
    case "xavier": {
      const b = rule.kind === "uniform" ? rule.bound : xavierBound(shape);
      for (let i = 0; i < data.length; i++) data[i] = (2 * u() - 1) * b;
      break;
    }
  }
  return { shape: [...shape], data };
}
