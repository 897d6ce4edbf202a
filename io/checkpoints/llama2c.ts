import type { Catalog, CheckpointTensor } from "./catalog.ts";
import { WeightsError } from "./errors.ts";
import { readAt, withFile } from "./sync-read.ts";

/** "ak42": the magic number of llama2.c's versioned exports (version 1 and later), not read here. */
const MAGIC = 0x616b3432;
const HEADER_FIELDS = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"] as const;
type Header = Record<(typeof HEADER_FIELDS)[number], number>;

/**
 * llama2.c's legacy .bin (version 0, run.c's `read_checkpoint`): seven int32 then float32
 * arrays stacked over layers. Each layer's slice of a stack is exposed as its own tensor,
 * named like llama2.c's PyTorch model (`layers.{l}.attention.wq.weight`), [out, in].
 * A negative vocab_size means an unshared classifier (`output.weight` at the end).
 */
export function llama2cCatalog(file: string): Catalog {
  return withFile(file, (fd, size) => {
    if (size < 28) throw new WeightsError(file, `is ${size} bytes, shorter than a llama2.c header (28 bytes)`);
    const head = readAt(fd, file, 0, 28);
    if (head.readUInt32LE(0) === MAGIC)
      throw new WeightsError(file, `is a llama2.c export of version ${head.readInt32LE(4)} ("ak42"); only the legacy layout (export.py --version 0) is read`);
    const h = Object.fromEntries(HEADER_FIELDS.map((k, i) => [k, head.readInt32LE(4 * i)])) as Header;
    return layout(file, size, h);
  });
}

function layout(file: string, size: number, h: Header): Catalog {
  const bad = (why: string) => new WeightsError(file, `header ${HEADER_FIELDS.map((k) => `${k}=${h[k]}`).join(" ")} ${why}: not a llama2.c checkpoint?`);
  for (const k of HEADER_FIELDS) if (k !== "vocab_size" && !(h[k] > 0)) throw bad(`has ${k} ≤ 0`);
  if (h.vocab_size === 0) throw bad("has vocab_size 0");
  if (h.dim % h.n_heads || h.n_heads % h.n_kv_heads || (h.dim / h.n_heads) % 2) throw bad("does not divide into heads of an even size");
  const vocab = Math.abs(h.vocab_size);
  const hs = h.dim / h.n_heads;
  const kv = h.n_kv_heads * hs;
  // the size the header implies, before anything is laid out (a damaged header can claim 2^31 layers)
  const floats =
    vocab * h.dim * (h.vocab_size < 0 ? 2 : 1) +
    h.n_layers * (2 * h.dim + 2 * h.dim * h.dim + 2 * kv * h.dim + 3 * h.hidden_dim * h.dim) +
    h.dim +
    h.seq_len * hs;
  if (28 + 4 * floats !== size)
    throw new WeightsError(
      file,
      `is ${size.toLocaleString("en-US")} bytes, but its header (${HEADER_FIELDS.map((k) => `${k} ${h[k]}`).join(", ")}) describes ${(28 + 4 * floats).toLocaleString("en-US")}`,
    );
  const tensors = new Map<string, CheckpointTensor>();
  let offset = 28;
  const add = (name: string, shape: number[]) => {
    const byteLength = 4 * shape.reduce((a, b) => a * b, 1);
    tensors.set(name, { name, dtype: "F32", shape, file, offset, byteLength });
    offset += byteLength;
  };
  const stack = (pattern: string, shape: number[]) => {
    for (let l = 0; l < h.n_layers; l++) add(pattern.replace("{l}", String(l)), shape);
  };
  add("tok_embeddings.weight", [vocab, h.dim]);
  stack("layers.{l}.attention_norm.weight", [h.dim]);
  stack("layers.{l}.attention.wq.weight", [h.dim, h.dim]);
  stack("layers.{l}.attention.wk.weight", [kv, h.dim]);
  stack("layers.{l}.attention.wv.weight", [kv, h.dim]);
  stack("layers.{l}.attention.wo.weight", [h.dim, h.dim]);
  stack("layers.{l}.ffn_norm.weight", [h.dim]);
  stack("layers.{l}.feed_forward.w1.weight", [h.hidden_dim, h.dim]);
  stack("layers.{l}.feed_forward.w2.weight", [h.dim, h.hidden_dim]);
  stack("layers.{l}.feed_forward.w3.weight", [h.hidden_dim, h.dim]);
  add("norm.weight", [h.dim]);
  add("freq_cis_real", [h.seq_len, hs / 2]);
  add("freq_cis_imag", [h.seq_len, hs / 2]);
  if (h.vocab_size < 0) add("output.weight", [vocab, h.dim]);
  if (offset !== size) throw new Error(`internal: llama2.c layout of ${file} ends at ${offset}, not ${size}`);
  return { path: file, format: "llama2c", config: { ...h, vocab_size: vocab, shared_classifier: h.vocab_size > 0 }, configFile: file, metadata: {}, tensors };
}
