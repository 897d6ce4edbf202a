/**
 * The peer for bench/generate.ts: a LLaMA decoder written directly in TensorFlow.js ops
 * (the same math as models/std/llama.dehvf: RMSNorm, rotate-half RoPE, grouped KV heads,
 * SwiGLU, tied or separate head) with its own KV cache, one token per step. Weights come
 * from our parameter map by name, so both run the same numbers.
 */
import type { Tensor } from "../compiler/tensor.ts";
import type { Tf } from "./peers.ts";

type T = import("@tensorflow/tfjs-core").Tensor;

export interface LlamaShape {
  readonly layers: number;
  readonly d: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly eps: number;
  readonly ropeBase: number;
}

export class TfLlama {
  private readonly w = new Map<string, T>();
  private keys: T[] = [];
  private values: T[] = [];

  constructor(
    private readonly tf: Tf,
    private readonly shape: LlamaShape,
    params: ReadonlyMap<string, Tensor>,
    prefix = "language",
  ) {
    // matrices transposed once to [in, out], as a Dense layer keeps them
    for (const [name, t] of params) {
      if (!name.startsWith(`${prefix}.`)) continue;
      const x = tf.tensor(Float32Array.from(t.data), [...t.shape]);
      this.w.set(name.slice(prefix.length + 1), t.shape.length === 2 && name !== `${prefix}.embed` ? tf.keep(tf.transpose(x)) : tf.keep(x));
      if (t.shape.length === 2 && name !== `${prefix}.embed`) x.dispose();
    }
  }

  private p(name: string): T {
    const t = this.w.get(name);
    if (!t) throw new Error(`tfjs llama: no weight ${name}`);
    return t;
  }

  private rms(x: T, name: string): T {
    const tf = this.tf;
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), this.shape.eps))), this.p(name));
  }

  /** x [1, heads, dh] rotated for position `pos` (HF's rotate_half pairing). */
  private rope(x: T, pos: number): T {
    const tf = this.tf;
    const dh = x.shape[2]!;
    const half = dh / 2;
    const inv = Array.from({ length: half }, (_, i) => Math.exp((i * (-2 * Math.log(this.shape.ropeBase))) / dh) * pos);
    const cos = tf.tensor1d([...inv, ...inv].map(Math.cos));
    const sin = tf.tensor1d([...inv, ...inv].map(Math.sin));
    const [a, b] = tf.split(x, 2, -1);
    return tf.add(tf.mul(x, cos), tf.mul(tf.concat([tf.neg(b), a], -1), sin));
  }

  /** Logits [vocab] for `token` at `pos` (positions must come in order from 0). */
  async step(token: number, pos: number): Promise<Float32Array> {
    const tf = this.tf;
    const { layers, d, heads, kvHeads } = this.shape;
    const dh = d / heads;
    const group = heads / kvHeads;
    const logits = tf.tidy(() => {
      let h = tf.gather(this.p("embed"), tf.tensor1d([token], "int32")); // [1, d]
      for (let l = 0; l < layers; l++) {
        const L = `layer.${l}`;
        const x = this.rms(h, `${L}.attn_norm.weight`);
        const q = this.rope(tf.reshape(tf.matMul(x, this.p(`${L}.attn.wq.w`)), [1, heads, dh]), pos);
        const k = this.rope(tf.reshape(tf.matMul(x, this.p(`${L}.attn.wk.w`)), [1, kvHeads, dh]), pos);
        const v = tf.reshape(tf.matMul(x, this.p(`${L}.attn.wv.w`)), [1, kvHeads, dh]);
        // the cache grows by one row per step: [kvHeads, pos + 1, dh]
        const kc = pos === 0 ? tf.transpose(k, [1, 0, 2]) : tf.concat([this.keys[l], tf.transpose(k, [1, 0, 2])], 1);
        const vc = pos === 0 ? tf.transpose(v, [1, 0, 2]) : tf.concat([this.values[l], tf.transpose(v, [1, 0, 2])], 1);
        if (pos > 0) {
          this.keys[l].dispose();
          this.values[l].dispose();
        }
        this.keys[l] = tf.keep(kc);
        this.values[l] = tf.keep(vc);
        // query head h reads key/value head floor(h / group)
        const qg = tf.reshape(q, [kvHeads, group, dh]);
        const p = tf.softmax(tf.div(tf.matMul(qg, kc, false, true), Math.sqrt(dh)), -1); // [kv, group, pos+1]
        const o = tf.reshape(tf.matMul(p, vc), [1, d]);
        h = tf.add(h, tf.matMul(o, this.p(`${L}.attn.wo.w`)));
        const f = this.rms(h, `${L}.ffn_norm.weight`);
        const gated = tf.mul(
          tf.mul(tf.matMul(f, this.p(`${L}.ffn.gate`)), tf.sigmoid(tf.matMul(f, this.p(`${L}.ffn.gate`)))),
          tf.matMul(f, this.p(`${L}.ffn.up`)),
        );
        h = tf.add(h, tf.matMul(gated, this.p(`${L}.ffn.down`)));
      }
      const head = this.w.has("lm_head")
        ? tf.matMul(this.rms(h, "norm.weight"), this.p("lm_head"))
        : tf.matMul(this.rms(h, "norm.weight"), this.p("embed"), false, true);
      return tf.reshape(head, [-1]);
    });
    const out = (await logits.data()) as Float32Array;
    logits.dispose();
    return out;
  }

  dispose(): void {
    for (const t of [...this.w.values(), ...this.keys, ...this.values]) t.dispose();
  }
}
