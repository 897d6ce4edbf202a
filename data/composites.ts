import { seededRng } from "../compiler/param-init.ts";
import { ITEM_SIZE, type FashionMnist, type FashionSplit } from "./fashion-mnist.ts";

export const GRID_SIZE = 2 * ITEM_SIZE;

/** Row-major, the order of every per-quadrant array (classes, sources, ViT labels). */
export const QUADRANTS = ["top-left", "top-right", "bottom-left", "bottom-right"] as const;

export type Quad<T> = [T, T, T, T];

/** The items a composite may draw from; restricting `byClass` to a subset keeps val and test sources apart. */
export interface ItemPool {
  split: FashionSplit;
  source: FashionMnist;
  byClass: number[][];
}

/** Which four source images make up a composite: enough to re-render it and to label it. */
export interface Composite {
  split: FashionSplit;
  classes: Quad<number>;
  sources: Quad<number>;
}

export function itemPool(source: FashionMnist, split: FashionSplit, indices?: Iterable<number>): ItemPool {
  const byClass: number[][] = Array.from({ length: 10 }, () => []);
  for (const i of indices ?? Array.from({ length: source.n }, (_, k) => k)) byClass[source.labels[i]].push(i);
  const empty = byClass.findIndex((c) => c.length === 0);
  if (empty >= 0) throw new Error(`item pool (${split}) has no image of class ${empty}`);
  return { split, source, byClass };
}

export function pick<T>(rand: () => number, xs: readonly T[]): T {
  return xs[Math.floor(rand() * xs.length)];
}

/** In-place Fisher–Yates. */
export function shuffle<T>(rand: () => number, xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

/** A composite with the given class in each quadrant, each drawn from a random source image of that class. */
export function composeClasses(pool: ItemPool, classes: Quad<number>, rand: () => number): Composite {
  const sources = classes.map((c) => pick(rand, pool.byClass[c])) as Quad<number>;
  return { split: pool.split, classes: [...classes], sources };
}

export function randomComposites(pool: ItemPool, count: number, seed: number): Composite[] {
  const rand = seededRng(seed, `composites:${pool.split}`);
  return Array.from({ length: count }, () => composeClasses(pool, [0, 0, 0, 0].map(() => Math.floor(rand() * 10)) as Quad<number>, rand));
}

/** 56×56 grey, row-major. */
export function renderComposite(pool: ItemPool, c: Composite): Uint8Array {
  if (c.split !== pool.split) throw new Error(`composite from ${c.split} rendered with the ${pool.split} pool`);
  const out = new Uint8Array(GRID_SIZE * GRID_SIZE);
  const s = ITEM_SIZE;
  c.sources.forEach((src, q) => {
    const y0 = (q >> 1) * s;
    const x0 = (q & 1) * s;
    for (let y = 0; y < s; y++) out.set(pool.source.images.subarray((src * s + y) * s, (src * s + y + 1) * s), (y0 + y) * GRID_SIZE + x0);
  });
  return out;
}
