import { type Tensor, tensor } from "../compiler/tensor.ts";
import type { StepModel } from "../runtime/decoder.ts";
import { argmax, type SamplingOptions, sampler } from "./sampler.ts";

export interface GenerateOptions extends SamplingOptions {
  /** new tokens at most */
  readonly maxTokens: number;
  /** tokens that end a row (not emitted): EOS, or BOS for llama2.c models as run.c does */
  readonly stop?: ReadonlySet<number>;
}

/** Row `at` of [B, S, V] logits. */
function logitsAt(logits: Tensor, b: number, at: number): Float64Array {
  const [, S, V] = logits.shape;
  return logits.data.subarray((b * S + at) * V, (b * S + at + 1) * V);
}

/**
 * Generates from one prompt (token ids; BOS included where the model expects one),
 * yielding each new token as soon as it is picked. The prompt runs once (prefill: the KV
 * cache and any image memory are filled), then each token costs one decode step.
 * `extra`: the model's other inputs for the prompt (image, prompt_mask), batch 1.
 */
export async function* generate(
  model: StepModel,
  prompt: readonly number[],
  opts: GenerateOptions,
  extra: ReadonlyMap<string, Tensor> = new Map(),
): AsyncGenerator<number> {
  if (model.batch !== 1) throw new Error(`generate() steps one row; the model was compiled for batch ${model.batch}`);
  if (!prompt.length) throw new Error("generate() needs at least one prompt token (BOS)");
  const pick = sampler(opts);
  const T = prompt.length;
  const feed = new Map(extra);
  feed.set("tokens", tensor([1, T], Int32Array.from(prompt)));
  const logits = await model.prefill(feed, T);
  let pos = model.promptSpan(T);
  let row: ArrayLike<number> = logitsAt(logits, 0, pos - 1);
  for (let n = 0; n < opts.maxTokens; n++) {
    const next = pick(row);
    if (opts.stop?.has(next)) return;
    yield next;
    if (n + 1 === opts.maxTokens) return;
    row = (await model.decode(Int32Array.of(next), Int32Array.of(pos))).data;
    pos++;
  }
}

/**
 * Greedy generation for a batch of prompts (right-padded to `promptLength`, `pad` filling):
 * a row ends at a token of `stop` (not kept), after one of `stopAfter` (kept), after
 * `maxNew` tokens, or when it fills the context. `extra`: the other inputs for the prompt
 * batch ([B, ...]; prompt_mask [B, promptLength] if the model takes it).
 */
export async function generateBatch(
  model: StepModel,
  prompts: readonly (readonly number[])[],
  opts: { maxNew: number; promptLength: number; pad: number; stop?: ReadonlySet<number>; stopAfter?: ReadonlySet<number>; extra?: ReadonlyMap<string, Tensor> },
): Promise<number[][]> {
  const B = model.batch;
  const T = opts.promptLength;
  if (prompts.length !== B) throw new Error(`generateBatch: ${prompts.length} prompts for a batch of ${B}`);
  const tokens = new Int32Array(B * T).fill(opts.pad);
  prompts.forEach((p, b) => {
    if (p.length > T) throw new Error(`generateBatch: prompt ${b} has ${p.length} tokens, more than the ${T} the batch was laid out for`);
    tokens.set(p, b * T);
  });
  const feed = new Map(opts.extra ?? []);
  feed.set("tokens", tensor([B, T], tokens));
  const logits = await model.prefill(feed, T);
  const prefix = model.promptSpan(T) - T;
  const pos = Int32Array.from(prompts, (p) => prefix + p.length);
  const out: number[][] = prompts.map(() => []);
  const done = prompts.map(() => false);
  let rows: ArrayLike<number>[] = prompts.map((_, b) => logitsAt(logits, b, pos[b] - 1));
  const next = new Int32Array(B);
  for (let n = 0; n < opts.maxNew; n++) {
    for (let b = 0; b < B; b++) {
      if (done[b]) continue;
      // a full row has no position left for another token
      if (pos[b] >= model.context) {
        done[b] = true;
        continue;
      }
      next[b] = argmax(rows[b]);
      if (opts.stop?.has(next[b])) done[b] = true;
      else {
        out[b].push(next[b]);
        if (opts.stopAfter?.has(next[b])) done[b] = true;
      }
    }
    if (done.every(Boolean) || n + 1 === opts.maxNew) break;
    // finished rows still step (a plan has a fixed batch): they write where nothing reads
    const at = Int32Array.from(pos, (p) => Math.min(p, model.context - 1));
    const step = await model.decode(next, at);
    const V = step.shape[1];
    rows = prompts.map((_, b) => step.data.subarray(b * V, (b + 1) * V));
    for (let b = 0; b < B; b++) if (!done[b]) pos[b]++;
  }
  return out;
}
