import { readFileSync } from "node:fs";

/**
 * An independent reading of llama2.c's legacy .bin and run.c's forward, written from
 * llama2.c's published layout (shared/fixtures/stories260K/README.md) in plain float64:
 * interleaved RoPE pairs (2i, 2i+1), grouped KV heads, RMSNorm eps 1e-5, SwiGLU. Nothing
 * of dehvf's compiler or importer is used, so it checks both.
 */
export interface Llama2c {
  readonly dim: number;
  readonly hidden: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly vocab: number;
  readonly seqLen: number;
  readonly shared: boolean;
  /** every array by llama2.c's names: token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, wcls */
  readonly w: Readonly<Record<string, Float32Array>>;
}

export function readLlama2c(file: string): Llama2c {
  const buf = readFileSync(file);
  const ints = new Int32Array(buf.buffer, buf.byteOffset, 7);
  const [dim, hidden, layers, heads, kvHeads, vocabSigned, seqLen] = ints;
  const vocab = Math.abs(vocabSigned);
  const floats = new Float32Array(buf.buffer.slice(buf.byteOffset + 28, buf.byteOffset + buf.byteLength));
  const hs = dim / heads;
  const kvDim = kvHeads * hs;
  let at = 0;
  const take = (n: number) => floats.subarray(at, (at += n));
  const w: Record<string, Float32Array> = {};
  w.token_embedding = take(vocab * dim);
  w.rms_att = take(layers * dim);
  w.wq = take(layers * dim * dim);
  w.wk = take(layers * kvDim * dim);
  w.wv = take(layers * kvDim * dim);
  w.wo = take(layers * dim * dim);
  w.rms_ffn = take(layers * dim);
  w.w1 = take(layers * hidden * dim);
  w.w2 = take(layers * dim * hidden);
  w.w3 = take(layers * hidden * dim);
  w.rms_final = take(dim);
  take((seqLen * hs) / 2); // freq_cis_real (unused: RoPE is recomputed)
  take((seqLen * hs) / 2); // freq_cis_imag
  w.wcls = vocabSigned > 0 ? w.token_embedding : take(vocab * dim);
  if (at !== floats.length) throw new Error(`llama2c reference: ${floats.length - at} floats left over`);
  return { dim, hidden, layers, heads, kvHeads, vocab, seqLen, shared: vocabSigned > 0, w };
}

/** out[rows] = W[rows, cols] (row-major, at `offset`) · x */
function matvec(W: Float32Array, offset: number, x: Float64Array, rows: number): Float64Array {
  const cols = x.length;
  const out = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    let s = 0;
    for (let j = 0; j < cols; j++) s += W[offset + i * cols + j] * x[j];
    out[i] = s;
  }
  return out;
}

function rmsnorm(x: Float64Array, w: Float32Array, offset: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const r = 1 / Math.sqrt(ss / x.length + 1e-5);
  return x.map((v, i) => v * r * w[offset + i]);
}

/** run.c's forward over `tokens` (positions 0..n-1): the logits at every position, [n][vocab]. */
export function referenceLogits(m: Llama2c, tokens: readonly number[]): Float64Array[] {
  const { dim, hidden, heads, kvHeads, w } = m;
  const hs = dim / heads;
  const kvDim = kvHeads * hs;
  const keys: Float64Array[][] = Array.from({ length: m.layers }, () => []);
  const values: Float64Array[][] = Array.from({ length: m.layers }, () => []);
  const out: Float64Array[] = [];
  tokens.forEach((tok, pos) => {
    let x = Float64Array.from(w.token_embedding.subarray(tok * dim, (tok + 1) * dim));
    for (let l = 0; l < m.layers; l++) {
      const xb = rmsnorm(x, w.rms_att, l * dim);
      const q = matvec(w.wq, l * dim * dim, xb, dim);
      const k = matvec(w.wk, l * kvDim * dim, xb, kvDim);
      const v = matvec(w.wv, l * kvDim * dim, xb, kvDim);
      for (let i = 0; i < dim; i += 2) {
        const freq = 1 / 10000 ** ((i % hs) / hs);
        const [c, s] = [Math.cos(pos * freq), Math.sin(pos * freq)];
        for (const vec of i < kvDim ? [q, k] : [q]) {
          const [a, b] = [vec[i], vec[i + 1]];
          vec[i] = a * c - b * s;
          vec[i + 1] = a * s + b * c;
        }
      }
      keys[l].push(k);
      values[l].push(v);
      const att = new Float64Array(dim);
      for (let h = 0; h < heads; h++) {
        const kvh = Math.floor(h / (heads / kvHeads));
        const scores = keys[l].map((kt) => {
          let s = 0;
          for (let i = 0; i < hs; i++) s += q[h * hs + i] * kt[kvh * hs + i];
          return s / Math.sqrt(hs);
        });
        const mx = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - mx));
        const z = e.reduce((a, b) => a + b, 0);
        for (let t = 0; t < e.length; t++) for (let i = 0; i < hs; i++) att[h * hs + i] += (e[t] / z) * values[l][t][kvh * hs + i];
      }
      const o = matvec(w.wo, l * dim * dim, att, dim);
      x = x.map((v2, i) => v2 + o[i]);
      const xf = rmsnorm(x, w.rms_ffn, l * dim);
      const g = matvec(w.w1, l * hidden * dim, xf, hidden);
      const u = matvec(w.w3, l * hidden * dim, xf, hidden);
      const hb = g.map((gi, i) => (gi / (1 + Math.exp(-gi))) * u[i]);
      const d = matvec(w.w2, l * dim * hidden, hb, dim);
      x = x.map((v2, i) => v2 + d[i]);
    }
    out.push(matvec(w.wcls, 0, rmsnorm(x, w.rms_final, 0), m.vocab));
  });
  return out;
}

/** HF's converter: q/k rows of a [heads·hd, cols] matrix from Meta's interleaved order to rotate_half's. */
export function permuteForHf(wm: Float32Array, heads: number, rows: number): Float32Array {
  const cols = wm.length / rows;
  const hd = rows / heads;
  const out = new Float32Array(wm.length);
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < hd / 2; i++)
      for (let j = 0; j < 2; j++) out.set(wm.subarray((h * hd + 2 * i + j) * cols, (h * hd + 2 * i + j + 1) * cols), (h * hd + j * (hd / 2) + i) * cols);
  return out;
}
