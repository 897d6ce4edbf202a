/*
 * Captioning metrics computed the way the COCO caption toolkit (pycocoevalcap) computes them, so
 * numbers are comparable with published results: corpus BLEU-1..4 with the "closest" reference
 * length and its tiny/small smoothing constants, and CIDEr-D (pycocoevalcap's `Cider` class) with
 * its quirks kept. Only the tokeniser differs: pycocoevalcap runs the Stanford PTB tokeniser
 * (Java); `tokenize` is a plain-JS approximation (lowercase, split on whitespace/punctuation).
 */

export interface CaptionExample {
  /** The model's hypothesis. */
  candidates: string;
  references: readonly string[];
}

export type CaptionCorpus = ReadonlyMap<string, CaptionExample> | Readonly<Record<string, CaptionExample>>;

/**
 * Lowercase words: runs of letters/digits, keeping internal apostrophes and hyphens ("don't",
 * "t-shirt") and decimal/thousands separators inside numbers ("3.5", "1,000"); every other
 * punctuation character separates words and is dropped, as pycocoevalcap drops punctuation tokens.
 */
export function tokenize(text: string): string[] {
  return (
    text
      .toLowerCase()
      .normalize("NFKC")
      .match(/\p{N}+(?:[.,]\p{N}+)+|[\p{L}\p{N}]+(?:['’-][\p{L}\p{N}]+)*/gu) ?? []
  );
}

function entries(corpus: CaptionCorpus): [string, CaptionExample][] {
  const list: [string, CaptionExample][] =
    corpus instanceof Map ? [...(corpus as ReadonlyMap<string, CaptionExample>).entries()] : Object.entries(corpus as Record<string, CaptionExample>);
  for (const [id, ex] of list) {
    if (typeof ex.candidates !== "string") throw new TypeError(`caption metrics: image ${id}: candidates must be one string`);
    if (ex.references.length === 0) throw new RangeError(`caption metrics: image ${id} has no references`);
  }
  return list;
}

/** n-gram (n = 1..maxN) counts; keys join tokens with a space (tokens never contain one). */
function ngramCounts(words: readonly string[], maxN = 4): Map<string, number> {
  const counts = new Map<string, number>();
  for (let k = 1; k <= maxN; k++) {
    for (let i = 0; i + k <= words.length; i++) {
      const g = words.slice(i, i + k).join(" ");
      counts.set(g, (counts.get(g) ?? 0) + 1);
    }
  }
  return counts;
}

function order(ngram: string): number {
  let n = 1;
  for (let i = 0; i < ngram.length; i++) if (ngram.charCodeAt(i) === 32) n++;
  return n;
}

// ---------------------------------------------------------------- BLEU

export interface BleuResult {
  /** Corpus BLEU-1..4 (index 0 = BLEU-1). */
  bleu: [number, number, number, number];
  /** Per-image BLEU-1..4 from each image's own counts and its own brevity penalty. */
  perImage: Map<string, [number, number, number, number]>;
  testLength: number;
  refLength: number;
}

interface BleuCounts {
  testlen: number;
  reflen: number;
  guess: number[];
  correct: number[];
}

// pycocoevalcap's smoothing: makes a zero match count give a tiny score instead of log(0).
const SMALL = 1e-9;
const TINY = 1e-15;

function bleuFromCounts(c: BleuCounts): [number, number, number, number] {
  const out: number[] = [];
  let prod = 1;
  const ratio = (c.testlen + TINY) / (c.reflen + SMALL);
  for (let k = 0; k < 4; k++) {
    prod *= (c.correct[k] + TINY) / (c.guess[k] + SMALL);
    let b = prod ** (1 / (k + 1));
    if (ratio < 1) b *= Math.exp(1 - 1 / ratio);
    out.push(b);
  }
  return out as [number, number, number, number];
}

export function bleu(corpus: CaptionCorpus): BleuResult {
  const total: BleuCounts = { testlen: 0, reflen: 0, guess: [0, 0, 0, 0], correct: [0, 0, 0, 0] };
  const perImage = new Map<string, [number, number, number, number]>();
  for (const [id, ex] of entries(corpus)) {
    const test = tokenize(ex.candidates);
    const maxRef = new Map<string, number>();
    const refLens: number[] = [];
    for (const r of ex.references) {
      const words = tokenize(r);
      refLens.push(words.length);
      for (const [g, c] of ngramCounts(words)) if (c > (maxRef.get(g) ?? 0)) maxRef.set(g, c);
    }
    // "closest": the reference length nearest the hypothesis length, ties to the shorter one.
    let reflen = refLens[0];
    for (const l of refLens) {
      const d = Math.abs(l - test.length);
      const best = Math.abs(reflen - test.length);
      if (d < best || (d === best && l < reflen)) reflen = l;
    }
    const c: BleuCounts = { testlen: test.length, reflen, guess: [0, 1, 2, 3].map((k) => Math.max(0, test.length - k)), correct: [0, 0, 0, 0] };
    for (const [g, n] of ngramCounts(test)) c.correct[order(g) - 1] += Math.min(n, maxRef.get(g) ?? 0);
    perImage.set(id, bleuFromCounts(c));
    total.testlen += c.testlen;
    total.reflen += c.reflen;
    for (let k = 0; k < 4; k++) {
      total.guess[k] += c.guess[k];
      total.correct[k] += c.correct[k];
    }
  }
  return { bleu: bleuFromCounts(total), perImage, testLength: total.testlen, refLength: total.reflen };
}

// ---------------------------------------------------------------- CIDEr-D

export interface CiderResult {
  /** Corpus CIDEr-D: mean of the per-image scores, on the toolkit's scale (a good COCO model ≈ 1.1; papers print ×100). */
  cider: number;
  perImage: Map<string, number>;
}

export const CIDER_SIGMA = 6;

interface TfIdfVec {
  vec: Map<string, number>[];
  norm: number[];
  length: number;
}

/**
 * CIDEr-D as in pycocoevalcap/cider/cider_scorer.py: document frequencies over the references
 * of the evaluated corpus, idf = log(#images) - log(max(1, df)), per-order cosine similarity with
 * the hypothesis weights clipped to the reference's, Gaussian length penalty (sigma 6), mean over
 * orders 1..4 and over references, ×10.
 */
export function ciderD(corpus: CaptionCorpus, sigma: number = CIDER_SIGMA): CiderResult {
  const list = entries(corpus);
  const tests = list.map(([, ex]) => ngramCounts(tokenize(ex.candidates)));
  const refs = list.map(([, ex]) => ex.references.map((r) => ngramCounts(tokenize(r))));

  const df = new Map<string, number>();
  for (const rs of refs) {
    const seen = new Set<string>();
    for (const r of rs) for (const g of r.keys()) seen.add(g);
    for (const g of seen) df.set(g, (df.get(g) ?? 0) + 1);
  }
  const refLen = Math.log(list.length);

  const toVec = (counts: Map<string, number>): TfIdfVec => {
    const vec = [0, 1, 2, 3].map(() => new Map<string, number>());
    const norm = [0, 0, 0, 0];
    let length = 0;
    for (const [g, tf] of counts) {
      const n = order(g) - 1;
      const w = tf * (refLen - Math.log(Math.max(1, df.get(g) ?? 0)));
      vec[n].set(g, w);
      norm[n] += w * w;
      // Kept from the reference code: "length" counts bigrams (n index 1), not words. The
      // penalty only sees the difference of lengths, which is the same except for empty captions.
      if (n === 1) length += tf;
    }
    return { vec, norm: norm.map(Math.sqrt), length };
  };

  const sim = (h: TfIdfVec, r: TfIdfVec): number[] => {
    const delta = h.length - r.length;
    const penalty = Math.exp(-(delta * delta) / (2 * sigma * sigma));
    const val = [0, 0, 0, 0];
    for (let n = 0; n < 4; n++) {
      for (const [g, w] of h.vec[n]) {
        const wr = r.vec[n].get(g) ?? 0;
        val[n] += Math.min(w, wr) * wr;
      }
      if (h.norm[n] !== 0 && r.norm[n] !== 0) val[n] /= h.norm[n] * r.norm[n];
      val[n] *= penalty;
    }
    return val;
  };

  const perImage = new Map<string, number>();
  let sum = 0;
  list.forEach(([id], i) => {
    const h = toVec(tests[i]);
    const acc = [0, 0, 0, 0];
    for (const r of refs[i]) {
      const v = sim(h, toVec(r));
      for (let n = 0; n < 4; n++) acc[n] += v[n];
    }
    const score = ((acc[0] + acc[1] + acc[2] + acc[3]) / 4 / refs[i].length) * 10;
    perImage.set(id, score);
    sum += score;
  });
  return { cider: list.length === 0 ? NaN : sum / list.length, perImage };
}

/** BLEU-1..4 and CIDEr-D together, the usual captioning report. */
export function captionMetrics(corpus: CaptionCorpus): { bleu1: number; bleu2: number; bleu3: number; bleu4: number; ciderD: number } {
  const [bleu1, bleu2, bleu3, bleu4] = bleu(corpus).bleu;
  return { bleu1, bleu2, bleu3, bleu4, ciderD: ciderD(corpus).cider };
}

// ---------------------------------------------------------------- multiple choice

export interface AccuracyCell {
  correct: number;
  total: number;
  /** correct / total; NaN when total is 0. */
  accuracy: number;
}

export interface MultipleChoiceAccuracy {
  /** Micro average over all questions. */
  overall: AccuracyCell;
  /** Unweighted mean of the per-category accuracies. */
  macro: number;
  perCategory: Record<string, AccuracyCell>;
}

export function multipleChoiceAccuracy(items: Iterable<{ category: string; correct: boolean }>): MultipleChoiceAccuracy {
  const cells = new Map<string, { correct: number; total: number }>();
  let correct = 0;
  let total = 0;
  for (const it of items) {
    const c = cells.get(it.category) ?? { correct: 0, total: 0 };
    c.total++;
    total++;
    if (it.correct) {
      c.correct++;
      correct++;
    }
    cells.set(it.category, c);
  }
  const cell = (c: number, t: number): AccuracyCell => ({ correct: c, total: t, accuracy: t === 0 ? NaN : c / t });
  const perCategory: Record<string, AccuracyCell> = {};
  for (const k of [...cells.keys()].sort()) perCategory[k] = cell(cells.get(k)!.correct, cells.get(k)!.total);
  const accs = Object.values(perCategory).map((c) => c.accuracy);
  return { overall: cell(correct, total), macro: accs.length === 0 ? NaN : accs.reduce((a, b) => a + b, 0) / accs.length, perCategory };
}
