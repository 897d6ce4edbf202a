/**
 * The peer for bench/train.ts: one fine-tuning step of models/tiny-vqa.dehvf's TinyVQA (the
 * DEHVF fusion over a frozen ViT and a frozen LLaMA) written directly in TensorFlow.js ops,
 * the way a TF.js user would: the frozen ViT's layer outputs outside the tape, the LLM with
 * the fusion in its FFNs under `tf.variableGrads`, the masked cross-entropy, global-norm
 * clipping and AdamW with the same constants as compiler/train-graph.ts. The math follows
 * models/std/{vit,llama,fusion,nn}.dehvf; weights come from our parameter map by name, so
 * both run the same numbers and their losses can be compared step by step.
 */
import type { Tensor } from "../compiler/tensor.ts";
import type { OptimizerConfig } from "../compiler/train-graph.ts";
import type { Tf } from "./peers.ts";

type T = import("@tensorflow/tfjs-core").Tensor;
type V = import("@tensorflow/tfjs-core").Variable;

/** The hyper-parameters of TinyVQA (models/tiny-vqa.dehvf) that the weights do not show. */
export interface TinyVqaShape {
  readonly patch: number;
  readonly visionHeads: number;
  readonly lmHeads: number;
  /** DEHVF's router width t, projector scale s_z and memory scale s_m */
  readonly t: number;
  readonly sZ: number;
  readonly sM: number;
}

export const TINY_VQA_SHAPE: TinyVqaShape = { patch: 7, visionHeads: 4, lmHeads: 4, t: 32, sZ: 0.1, sM: 0.1 };

/** One batch as the step reads it (the names of the compiled step's inputs). */
export interface StepBatch {
  readonly image: Float32Array;
  readonly tokens: Int32Array;
  readonly promptMask: Float32Array;
  readonly targets: Int32Array;
  readonly lossMask: Float32Array;
  readonly B: number;
  readonly T: number;
  readonly imageSize: number;
}

const count = (params: ReadonlyMap<string, Tensor>, prefix: string): number => {
  let n = 0;
  while (params.has(`${prefix}.${n}.${prefix.startsWith("vision") ? "ln1.weight" : "attn_norm.weight"}`)) n++;
  return n;
};

let instances = 0;

/** the frozen matrices a Linear-like layer multiplies by (not embeddings or positions) */
const DENSE_WEIGHT = /\.(w|gate|up|down|lm_head|patch_w)$/;

export class TfTinyVqaStep {
  private readonly frozen = new Map<string, T>();
  private readonly trained = new Map<string, V>();
  private readonly moments = new Map<string, [V, V]>();
  /** the trained weights AdamW decays (matrices) */
  private readonly decay: Set<string>;
  private readonly visionLayers: number;
  private readonly lmLayers: number;

  constructor(
    private readonly tf: Tf,
    params: ReadonlyMap<string, Tensor>,
    /** the trainable parameters (the fusion's), with whether AdamW decays them */
    trainable: readonly { name: string; decay: boolean }[],
    private readonly opt: OptimizerConfig,
    private readonly shape: TinyVqaShape = TINY_VQA_SHAPE,
  ) {
    instances++;
    const isTrained = new Set(trainable.map((p) => p.name));
    for (const [name, t] of params) {
      const x = tf.tensor(Float32Array.from(t.data), [...t.shape]);
      if (isTrained.has(name)) {
        // TF.js variable names are global: one prefix per instance (a peer per backend)
        this.trained.set(name, tf.variable(x, true, `tiny-vqa-${instances}/${name}`));
        this.moments.set(name, [tf.variable(tf.zerosLike(x), false), tf.variable(tf.zerosLike(x), false)]);
        x.dispose();
      } else if (DENSE_WEIGHT.test(name)) {
        // frozen matrices transposed once to [in, out], as a Dense layer keeps them
        this.frozen.set(name, tf.keep(tf.transpose(x)));
        x.dispose();
      } else this.frozen.set(name, tf.keep(x));
    }
    this.decay = new Set(trainable.filter((p) => p.decay).map((p) => p.name));
    this.visionLayers = count(params, "vision.layer");
    this.lmLayers = count(params, "language.layer");
  }

  private p(name: string): T {
    const t = this.frozen.get(name) ?? this.trained.get(name);
    if (!t) throw new Error(`tfjs tiny-vqa: no weight ${name}`);
    return t;
  }

  /** x [..., in] @ W (a frozen matrix, kept as [in, out]) */
  private dense(x: T, w: string, b?: string): T {
    const tf = this.tf;
    const wt = this.p(w);
    const y = tf.reshape(tf.matMul(tf.reshape(x, [-1, x.shape.at(-1)!]), wt), [...x.shape.slice(0, -1), wt.shape[1]!]);
    return b ? tf.add(y, this.p(b)) : y;
  }

  /** x [..., in] @ Wᵀ (+ b) for a trained Linear (W [out, in], as our parameters store it) */
  private linear(x: T, prefix: string): T {
    const tf = this.tf;
    const w = this.p(`${prefix}.w`);
    const y = tf.reshape(tf.matMul(tf.reshape(x, [-1, x.shape.at(-1)!]), w, false, true), [...x.shape.slice(0, -1), w.shape[0]!]);
    return tf.add(y, this.p(`${prefix}.b`));
  }

  private layerNorm(x: T, name: string): T {
    const tf = this.tf;
    const xc = tf.sub(x, tf.mean(x, -1, true));
    const v = tf.mean(tf.square(xc), -1, true);
    return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(v, 1e-5))), this.p(`${name}.weight`)), this.p(`${name}.bias`));
  }

  private rms(x: T, name: string): T {
    const tf = this.tf;
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), 1e-6))), this.p(`${name}.weight`));
  }

  private silu(x: T): T {
    return this.tf.mul(x, this.tf.sigmoid(x));
  }

  /** [B, N, d] -> [B, heads, N, d / heads] */
  private split(x: T, heads: number): T {
    const [B, N, d] = x.shape as number[];
    return this.tf.transpose(this.tf.reshape(x, [B, N, heads, d / heads]), [0, 2, 1, 3]);
  }

  private merge(x: T): T {
    const [B, H, N, dh] = x.shape as number[];
    return this.tf.reshape(this.tf.transpose(x, [0, 2, 1, 3]), [B, N, H * dh]);
  }

  /** The ViT's layer outputs, stacked [L, B, N + 1, d] (no gradient needed: it is frozen). */
  visionFeatures(image: T): T {
    const tf = this.tf;
    const [B, C, H] = image.shape as number[];
    const P = this.shape.patch;
    const g = H / P;
    const patches = tf.reshape(tf.transpose(tf.reshape(image, [B, C, g, P, g, P]), [0, 2, 4, 1, 3, 5]), [B, g * g, C * P * P]);
    const e = this.dense(patches, "vision.patch_w");
    const d = e.shape[2]!;
    const cls = tf.tile(tf.reshape(this.p("vision.cls"), [1, 1, d]), [B, 1, 1]);
    let x = this.layerNorm(tf.add(tf.concat([cls, e], 1), this.p("vision.pos")), "vision.ln_pre");
    const outs: T[] = [];
    const heads = this.shape.visionHeads;
    for (let l = 0; l < this.visionLayers; l++) {
      const L = `vision.layer.${l}`;
      const a = this.layerNorm(x, `${L}.ln1`);
      const q = this.split(this.dense(a, `${L}.attn.wq.w`, `${L}.attn.wq.b`), heads);
      const k = this.split(this.dense(a, `${L}.attn.wk.w`, `${L}.attn.wk.b`), heads);
      const v = this.split(this.dense(a, `${L}.attn.wv.w`, `${L}.attn.wv.b`), heads);
      const p = tf.softmax(tf.div(tf.matMul(q, k, false, true), Math.sqrt(d / heads)), -1);
      const h = tf.add(x, this.dense(this.merge(tf.matMul(p, v)), `${L}.attn.wo.w`, `${L}.attn.wo.b`));
      const y = this.layerNorm(h, `${L}.ln2`);
      const f = this.dense(y, `${L}.mlp.fc1.w`, `${L}.mlp.fc1.b`);
      x = tf.add(h, this.dense(tf.mul(f, tf.sigmoid(tf.mul(f, 1.702))), `${L}.mlp.fc2.w`, `${L}.mlp.fc2.b`));
      outs.push(x);
    }
    return tf.stack(outs);
  }

  private rope(x: T, cos: T, sin: T): T {
    const tf = this.tf;
    const [a, b] = tf.split(x, 2, -1);
    return tf.add(tf.mul(x, cos), tf.mul(tf.concat([tf.neg(b), a], -1), sin));
  }

  /** DEHVF at LLM layer l: route over the ViT layers, project, embed as FFN memory. */
  private dehvf(x: T, features: T, mask: T, l: number): T {
    const tf = this.tf;
    const { t, sZ, sM } = this.shape;
    const [L, B] = features.shape as number[];
    const e = tf.tile(tf.slice(this.p("dehvf.router.layer_id"), [l, 0], [1, t]), [B, 1]);
    const c = tf.div(tf.sum(tf.mul(x, tf.expandDims(mask, -1)), 1), tf.add(tf.sum(mask, 1, true), 1e-6));
    const i = this.linear(this.silu(this.linear(tf.concat([e, c], -1), "dehvf.router.h.fc1")), "dehvf.router.h.fc2"); // [B, t]
    const cls = tf.squeeze(tf.slice(features, [0, 0, 0, 0], [-1, -1, 1, -1]), [2]); // [L, B, dv]
    const kc = tf.reshape(tf.matMul(tf.reshape(cls, [L * B, -1]), this.p("dehvf.router.wk"), false, true), [L, B, t]);
    const qi = tf.matMul(i, this.p("dehvf.router.wq"), false, true); // [B, t]
    const alpha = tf.softmax(tf.div(tf.transpose(tf.sum(tf.mul(kc, qi), -1)), Math.sqrt(t)), -1); // [B, L]
    const patches = tf.slice(features, [0, 0, 1, 0], [-1, -1, -1, -1]); // [L, B, N, dv]
    const v = tf.sum(tf.mul(tf.expandDims(tf.expandDims(tf.transpose(alpha), -1), -1), patches), 0); // [B, N, dv]
    const z = tf.mul(this.linear(this.silu(this.linear(v, "dehvf.proj.fc1")), "dehvf.proj.fc2"), sZ); // [B, N, d]
    const keys = tf.add(z, this.p("dehvf.memory.p_k"));
    const values = tf.add(z, this.p("dehvf.memory.p_v"));
    return tf.mul(tf.matMul(this.silu(tf.matMul(x, keys, false, true)), values), sM);
  }

  /** Logits [B, T, vocab] of the LLM with DEHVF in every FFN. */
  private logits(tokens: T, features: T, mask: T): T {
    const tf = this.tf;
    const [B, S] = tokens.shape as number[];
    const embed = this.p("language.embed");
    const d = embed.shape[1]!;
    const heads = this.shape.lmHeads;
    const dh = d / heads;
    const inv = Array.from({ length: dh / 2 }, (_, i) => Math.exp(i * ((-2 * Math.log(10000)) / dh)));
    const ang = Array.from({ length: S }, (_, s) => [...inv, ...inv].map((f) => s * f));
    const cos = tf.tensor2d(ang.map((r) => r.map(Math.cos)));
    const sin = tf.tensor2d(ang.map((r) => r.map(Math.sin)));
    const causal = tf.tensor2d(Array.from({ length: S }, (_, q) => Array.from({ length: S }, (_, k) => (k <= q ? 0 : -1e9))));
    let h = tf.reshape(tf.gather(embed, tf.reshape(tokens, [-1])), [B, S, d]);
    for (let l = 0; l < this.lmLayers; l++) {
      const L = `language.layer.${l}`;
      const x = this.rms(h, `${L}.attn_norm`);
      const q = this.rope(this.split(this.dense(x, `${L}.attn.wq.w`), heads), cos, sin);
      const k = this.rope(this.split(this.dense(x, `${L}.attn.wk.w`), heads), cos, sin);
      const v = this.split(this.dense(x, `${L}.attn.wv.w`), heads);
      const p = tf.softmax(tf.add(tf.div(tf.matMul(q, k, false, true), Math.sqrt(dh)), causal), -1);
      const a = tf.add(h, this.dense(this.merge(tf.matMul(p, v)), `${L}.attn.wo.w`));
      const f = this.rms(a, `${L}.ffn_norm`);
      const ffn = this.dense(tf.mul(this.silu(this.dense(f, `${L}.ffn.gate`)), this.dense(f, `${L}.ffn.up`)), `${L}.ffn.down`);
      h = tf.add(tf.add(a, ffn), this.dehvf(f, features, mask, l));
    }
    return this.dense(this.rms(h, "language.norm"), "language.lm_head");
  }

  /** Masked mean cross-entropy, as compiler/train-graph.ts's maskedCrossEntropy. */
  private loss(logits: T, targets: T, mask: T): T {
    const tf = this.tf;
    const V = logits.shape.at(-1)!;
    const nll = tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits, -1), tf.oneHot(targets, V)), -1));
    return tf.div(tf.sum(tf.mul(nll, mask)), tf.maximum(tf.sum(mask), 1));
  }

  /** One step (1-based `step` for AdamW's bias corrections); resolves to the loss before the update. */
  async step(batch: StepBatch, step: number, lr: number): Promise<number> {
    const tf = this.tf;
    const { B, T: S, imageSize } = batch;
    const { beta1, beta2, eps, weightDecay, clip } = this.opt;
    const loss = tf.tidy(() => {
      const features = this.visionFeatures(tf.tensor4d(batch.image, [B, 1, imageSize, imageSize]));
      const tokens = tf.tensor2d(batch.tokens, [B, S], "int32");
      const mask = tf.tensor2d(batch.promptMask, [B, S]);
      const targets = tf.tensor2d(batch.targets, [B, S], "int32");
      const lossMask = tf.tensor2d(batch.lossMask, [B, S]);
      const { value, grads } = tf.variableGrads(
        () => this.loss(this.logits(tokens, features, mask), targets, lossMask) as import("@tensorflow/tfjs-core").Scalar,
        [...this.trained.values()],
      );
      const gnorm = tf.sqrt(tf.addN(Object.values(grads).map((g) => tf.sum(tf.square(g)))));
      const scale = clip > 0 ? tf.minimum(1, tf.div(clip, tf.add(gnorm, 1e-6))) : tf.scalar(1);
      const bc1 = 1 / (1 - beta1 ** step);
      const bc2 = 1 / (1 - beta2 ** step);
      for (const [name, w] of this.trained) {
        const g = tf.mul(grads[w.name], scale);
        const [m, v] = this.moments.get(name)!;
        const m1 = tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1));
        const v1 = tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2));
        const delta = tf.div(tf.mul(m1, bc1), tf.add(tf.sqrt(tf.mul(v1, bc2)), eps));
        const decayed = this.decay.has(name) && weightDecay > 0 ? tf.add(delta, tf.mul(w, weightDecay)) : delta;
        w.assign(tf.sub(w, tf.mul(decayed, lr)));
        m.assign(m1);
        v.assign(v1);
      }
      return value;
    });
    const out = (await loss.data())[0];
    loss.dispose();
    return out;
  }

  /** The current value of a trained weight (for checks). */
  async weight(name: string): Promise<Float32Array> {
    return (await this.trained.get(name)!.data()) as Float32Array;
  }

  dispose(): void {
    for (const t of [...this.frozen.values(), ...this.trained.values(), ...[...this.moments.values()].flat()]) t.dispose();
  }
}
