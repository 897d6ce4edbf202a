import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { DataError } from "./data-error.ts";

/** Where Debian's `dataset-fashion-mnist` puts the files; DEHVF_FASHION_MNIST overrides it. */
export const FASHION_MNIST_DIR = process.env.DEHVF_FASHION_MNIST ?? "/usr/share/datasets/fashion-mnist";

export type FashionSplit = "train" | "t10k";

export const ITEM_SIZE = 28;

/** Official label order of Fashion-MNIST. */
export const CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"] as const;

/** The words the generated text uses ("T-shirt/top" would tokenise badly and reads oddly in a sentence). */
export const CLASS_NOUNS = ["t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"] as const;
export const CLASS_PLURALS = ["t-shirts", "trousers", "pullovers", "dresses", "coats", "sandals", "shirts", "sneakers", "bags", "ankle boots"] as const;

/** Coarse kinds: telling them apart needs only shape, telling classes within "top" or "footwear" apart needs detail. */
export const GROUPS = ["top", "trousers", "dress", "footwear", "bag"] as const;
export type Group = (typeof GROUPS)[number];
export const CLASS_GROUP: readonly Group[] = ["top", "trousers", "top", "dress", "top", "footwear", "top", "footwear", "bag", "footwear"];

export interface FashionMnist {
  /** n × 28 × 28, row-major, 0 = background. */
  images: Uint8Array;
  labels: Uint8Array;
  n: number;
}

export interface Idx {
  dims: number[];
  data: Uint8Array;
}

/** IDX format (big-endian): two zero bytes, a type byte (0x08 = ubyte), the rank, then one uint32 per dimension. */
export function parseIdx(buf: Uint8Array, what = "IDX data"): Idx {
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0) throw new DataError(`${what}: not an IDX file (bad magic)`);
  if (buf[2] !== 0x08) throw new DataError(`${what}: element type 0x${buf[2].toString(16)} unsupported (only unsigned bytes)`);
  const rank = buf[3];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const head = 4 + 4 * rank;
  if (buf.length < head) throw new DataError(`${what}: truncated header`);
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i, false));
  const size = dims.reduce((a, b) => a * b, 1);
  if (buf.length !== head + size) throw new DataError(`${what}: ${buf.length - head} data bytes, header says ${size}`);
  return { dims, data: buf.subarray(head) };
}

function readIdxGz(path: string): Idx {
  if (!existsSync(path)) {
    throw new DataError(
      `Fashion-MNIST file missing: ${path}\n` +
        `  install it with: sudo apt-get install dataset-fashion-mnist   (or: npm run setup)\n` +
        `  or point DEHVF_FASHION_MNIST at a folder holding the four *-ubyte.gz files`,
    );
  }
  return parseIdx(gunzipSync(readFileSync(path)), path);
}

export function loadFashionMnist(split: FashionSplit, dir = FASHION_MNIST_DIR): FashionMnist {
  const img = readIdxGz(join(dir, `${split}-images-idx3-ubyte.gz`));
  const lab = readIdxGz(join(dir, `${split}-labels-idx1-ubyte.gz`));
  const [n, rows, cols] = img.dims;
  if (img.dims.length !== 3 || rows !== ITEM_SIZE || cols !== ITEM_SIZE) throw new DataError(`${split} images: shape [${img.dims}], expected [n, 28, 28]`);
  if (lab.dims.length !== 1 || lab.dims[0] !== n) throw new DataError(`${split}: ${lab.dims[0]} labels for ${n} images`);
  return { images: img.data, labels: lab.data, n };
}
