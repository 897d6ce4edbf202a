import type { Shape } from "./dims.ts";
import { pcgHash } from "./hash.ts";
import type { Node } from "./ir.ts";
import type { TensorOps } from "./tensor-ops.ts";

/*
 * Dropout, written with the IR's `hash` op. `dropout(x, p)` in a model elaborated for
 * training (ElaborateOptions.training) is
 *
 *   where(u < p, 0, x / (1 - p)),   u = hash(dropout_seed, element index; salt of the call site)
 *
 * and x itself otherwise (evaluation, generation, `dehvf run`): the graph is then exactly
 * the one without the call. `dropout_seed` is a scalar int input the training step feeds
 * per step, a pure function of the stage's seed and the global step (dropoutSeed), so a
 * resumed run draws the same masks as the uninterrupted one. Each call site has its own
 * salt (its instance path and how many dropouts that instance elaborated before it), so
 * two sites, or one shared block called at several layers, draw independent masks.
 * No gradient flows through the mask: d/dx is where(u < p, 0, g / (1 - p)).
 */

/** The scalar int input a training step feeds per step. */
export const DROPOUT_SEED = "dropout_seed";

/**
 * Each element's row-major linear index as an i32 tensor of `shape`: Σ_k i_k · stride_k,
 * from per-axis aranges (run-time dims through `size`). Exact on the device while the
 * tensor has fewer than 2^31 elements and every axis fewer than 2^24 (f32 aranges).
 */
export function elementIndex(t: TensorOps, shape: Shape): Node {
  let index: Node | undefined;
  let stride: Node | undefined; // undefined: 1
  for (let k = shape.length - 1; k >= 0; k--) {
    const d = shape[k];
    if (d === 1) continue;
    const along = t.reshape(
      t.cast(t.arange(d), "i32"),
      shape.map((_, i) => (i === k ? d : 1)),
    );
    const term = stride ? t.mul(along, stride) : along;
    index = index ? t.add(index, term) : term;
    const size = t.cast(t.size(d), "i32");
    stride = stride ? t.mul(stride, size) : size;
  }
  return t.expand(index ?? t.cast(t.scalar(0), "i32"), shape);
}

/** Dropout of float `x` with drop probability 0 < p < 1, drawing from `seed` (a scalar i32 node) with the call site's `salt`. */
export function dropout(t: TensorOps, x: Node, p: number, seed: Node, salt: number): Node {
  const u = t.make("hash", [t.expand(seed, x.shape), elementIndex(t, x.shape)], { salt });
  // p as the f32 the device compares with, so both sides drop exactly the same elements
  const drop = t.binary("cmplt", u, t.scalar(Math.fround(p)));
  return t.where(drop, t.scalar(0), t.mul(x, t.scalar(1 / (1 - p))));
}

/**
 * The `dropout_seed` of global step `step` (1-based) of a run seeded `seed`: a pure
 * function of the two (resume draws the same masks), different for every step, in
 * [0, 2^31) so it is an ordinary i32.
 */
export function dropoutSeed(seed: number, step: number): number {
  return pcgHash((pcgHash(seed >>> 0) + (step >>> 0)) >>> 0) >>> 1;
}
