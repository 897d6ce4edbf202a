import { seededRng } from "../util/rng.ts";
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

/**
 * How an item is drawn, chosen independently of its class: a classifier learns to ignore
 * it, so its deep layers may drop it while the shallow ones still see it.
 */
export interface Look {
  /** full intensity, or dimmed to DIM of it */
  bright: boolean;
  /** the full 28×28 quadrant, or shrunk to SMALL px in its centre */
  large: boolean;
}

export const DIM = 0.45;
export const SMALL = 18;

/** Which four source images make up a composite and how each is drawn: enough to re-render it and to label it. */
export interface Composite {
  split: FashionSplit;
  classes: Quad<number>;
  sources: Quad<number>;
  /** absent: every item bright and large (datasets built before looks) */
  looks?: Quad<Look>;
}

export const randomLook = (rand: () => number): Look => ({ bright: rand() < 0.5, large: rand() < 0.5 });

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

/** A composite with the given class in each quadrant, each drawn from a random source image of that class, with random looks where none are given. */
export function composeClasses(pool: ItemPool, classes: Quad<number>, rand: () => number, looks?: Quad<Look>): Composite {
  const sources = classes.map((c) => pick(rand, pool.byClass[c])) as Quad<number>;
  return { split: pool.split, classes: [...classes], sources, looks: looks ?? ([0, 1, 2, 3].map(() => randomLook(rand)) as Quad<Look>) };
}

export function randomComposites(pool: ItemPool, count: number, seed: number): Composite[] {
  const rand = seededRng(seed, `composites:${pool.split}`);
  return Array.from({ length: count }, () => composeClasses(pool, [0, 0, 0, 0].map(() => Math.floor(rand() * 10)) as Quad<number>, rand));
}

/** An item's 28×28 pixels shrunk to `size` × `size` (bilinear). */
function shrink(item: Uint8Array, size: number): Float32Array {
  const s = ITEM_SIZE;
  const out = new Float32Array(size * size);
  const scale = s / size;
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      const sy = Math.min(s - 1, Math.max(0, (y + 0.5) * scale - 0.5));
      const sx = Math.min(s - 1, Math.max(0, (x + 0.5) * scale - 0.5));
      const [y0, x0] = [Math.floor(sy), Math.floor(sx)];
      const [y1, x1] = [Math.min(s - 1, y0 + 1), Math.min(s - 1, x0 + 1)];
      const [fy, fx] = [sy - y0, sx - x0];
      const at = (yy: number, xx: number) => item[yy * s + xx];
      out[y * size + x] = (at(y0, x0) * (1 - fx) + at(y0, x1) * fx) * (1 - fy) + (at(y1, x0) * (1 - fx) + at(y1, x1) * fx) * fy;
    }
  return out;
}

/** 56×56 grey, row-major. */
export function renderComposite(pool: ItemPool, c: Composite): Uint8Array {
  if (c.split !== pool.split) throw new Error(`composite from ${c.split} rendered with the ${pool.split} pool`);
  const out = new Uint8Array(GRID_SIZE * GRID_SIZE);
  const s = ITEM_SIZE;
  c.sources.forEach((src, q) => {
    const y0 = (q >> 1) * s;
    const x0 = (q & 1) * s;
    const item = pool.source.images.subarray(src * s * s, (src + 1) * s * s);
    const look = c.looks?.[q] ?? { bright: true, large: true };
    const size = look.large ? s : SMALL;
    const pixels = look.large ? item : shrink(item, SMALL);
    const gain = look.bright ? 1 : DIM;
    const pad = (s - size) >> 1;
    for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) out[(y0 + pad + y) * GRID_SIZE + x0 + pad + x] = Math.round(pixels[y * size + x] * gain);
  });
  return out;
}
