/**
 * Writes llama2.c's stories260K weights as a Hugging Face LlamaForCausalLM directory
 * (config.json, F32 or BF16 shards, an index when sharded; q/k rows permuted as HF's
 * converter does), with the project's own safetensors writer.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type TensorToWrite, writeSafetensors } from "../io/safetensors.ts";
import { type Llama2c, permuteForHf } from "./llama2c-reference.ts";

/** The stories260K weights as an HF LlamaForCausalLM state dict (q/k rows permuted as HF's converter does). */
export function hfTensors(m: Llama2c): Map<string, Float32Array> {
  const { dim, hidden, heads, kvHeads, w } = m;
  const kvDim = (kvHeads * dim) / heads;
  const t = new Map<string, Float32Array>();
  const slice = (a: Float32Array, l: number, n: number) => a.slice(l * n, (l + 1) * n);
  t.set("model.embed_tokens.weight", w.token_embedding.slice());
  for (let l = 0; l < m.layers; l++) {
    const p = `model.layers.${l}.`;
    t.set(`${p}input_layernorm.weight`, slice(w.rms_att, l, dim));
    t.set(`${p}self_attn.q_proj.weight`, permuteForHf(slice(w.wq, l, dim * dim), heads, dim));
    t.set(`${p}self_attn.k_proj.weight`, permuteForHf(slice(w.wk, l, kvDim * dim), kvHeads, kvDim));
    t.set(`${p}self_attn.v_proj.weight`, slice(w.wv, l, kvDim * dim));
    t.set(`${p}self_attn.o_proj.weight`, slice(w.wo, l, dim * dim));
    t.set(`${p}post_attention_layernorm.weight`, slice(w.rms_ffn, l, dim));
    t.set(`${p}mlp.gate_proj.weight`, slice(w.w1, l, hidden * dim));
    t.set(`${p}mlp.down_proj.weight`, slice(w.w2, l, dim * hidden));
    t.set(`${p}mlp.up_proj.weight`, slice(w.w3, l, hidden * dim));
  }
  t.set("model.norm.weight", w.rms_final.slice());
  return t;
}

export function hfShape(name: string, m: Llama2c): number[] {
  const kvDim = (m.kvHeads * m.dim) / m.heads;
  if (name.endsWith("norm.weight") || name.endsWith("layernorm.weight") || name.endsWith("q_proj.bias")) return [m.dim];
  if (/[kv]_proj\.bias/.test(name)) return [kvDim];
  if (name === "model.embed_tokens.weight" || name === "lm_head.weight") return [m.vocab, m.dim];
  if (/[kv]_proj/.test(name)) return [kvDim, m.dim];
  if (/gate_proj|up_proj/.test(name)) return [m.hidden, m.dim];
  if (/down_proj/.test(name)) return [m.dim, m.hidden];
  return [m.dim, m.dim];
}

export function llamaConfig(m: Llama2c, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    architectures: ["LlamaForCausalLM"],
    hidden_size: m.dim,
    intermediate_size: m.hidden,
    num_hidden_layers: m.layers,
    num_attention_heads: m.heads,
    num_key_value_heads: m.kvHeads,
    vocab_size: m.vocab,
    max_position_embeddings: m.seqLen,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    tie_word_embeddings: true,
    torch_dtype: "float32",
    ...extra,
  });
}

/** An HF directory: config.json, and the tensors in `shards` files (with an index when more than one). */
export async function writeHf(
  dir: string,
  m: Llama2c,
  opts: {
    shards?: number;
    dtype?: "F32" | "BF16";
    config?: Record<string, unknown>;
    drop?: string;
    reshape?: [string, number[]];
    extra?: Record<string, Float32Array>;
  } = {},
): Promise<void> {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), llamaConfig(m, opts.config));
  const all = [...hfTensors(m), ...Object.entries(opts.extra ?? {})].filter(([k]) => k !== opts.drop);
  const n = opts.shards ?? 1;
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < n; s++) {
    const file = n === 1 ? "model.safetensors" : `model-0000${s + 1}-of-0000${n}.safetensors`;
    const mine = all.filter((_, i) => i % n === s);
    const tensors = new Map<string, TensorToWrite>(
      mine.map(([k, data]) => {
        const shape = opts.reshape?.[0] === k ? opts.reshape[1] : hfShape(k, m);
        return [k, { shape, data: opts.reshape?.[0] === k ? new Float32Array(shape.reduce((a, b) => a * b, 1)) : data, dtype: opts.dtype ?? "F32" }];
      }),
    );
    await writeSafetensors(join(dir, file), tensors, { format: "pt" });
    for (const [k] of mine) weightMap[k] = file;
  }
  if (n > 1) writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
}
