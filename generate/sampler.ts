import { rng } from "../util/rng.ts";

/** How the next token is picked from a row of logits. */
export interface SamplingOptions {
  /** 0: greedy (the first highest logit, as llama2.c's argmax); otherwise logits are divided by it */
  readonly temperature?: number;
  /** keep only the k most likely tokens (0: all) */
  readonly topK?: number;
  /** keep the smallest set of most likely tokens whose probability reaches p (1: all) */
  readonly topP?: number;
  /** the sampling stream's seed: the same seed and logits give the same tokens */
  readonly seed?: number;
}

export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let v = 1; v < row.length; v++) if (row[v] > row[best]) best = v;
  return best;
}

/** A seeded sampler: greedy at temperature 0, else softmax(logits / T) cut by top-k and top-p. */
export function sampler(opts: SamplingOptions = {}): (row: ArrayLike<number>) => number {
  const temperature = opts.temperature ?? 0;
  if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new RangeError(`temperature must be a finite number ≥ 0, got ${temperature}`);
  if (temperature === 0) return argmax;
  const topK = opts.topK ?? 0;
  const topP = opts.topP ?? 1;
  const random = rng(opts.seed ?? 0);
  return (row) => {
    const max = row[argmax(row)];
    // ranked by logit (ties: lower id first, as argmax), so top-k 1 is greedy even where probabilities round equal
    let order = Array.from(row, (x, i) => ({ i, x, p: Math.exp((x - max) / temperature) })).sort((a, b) => b.x - a.x || a.i - b.i);
    if (topK > 0) order = order.slice(0, topK);
    const total = order.reduce((a, x) => a + x.p, 0);
    if (topP < 1) {
      let mass = 0;
      const kept = order.findIndex((x) => (mass += x.p / total) >= topP);
      order = order.slice(0, kept + 1);
    }
    const kept = order.reduce((a, x) => a + x.p, 0);
    let u = random() * kept;
    for (const x of order) if ((u -= x.p) <= 0) return x.i;
    return order[order.length - 1].i;
  };
}
