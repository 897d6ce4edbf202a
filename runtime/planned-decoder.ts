import { CACHE_POS, CONTEXT_DIM } from "../compiler/decoding.ts";
import { type Tensor, tensor } from "../compiler/tensor.ts";
import type { RunnablePlan } from "../lowering/plan.ts";
import { createExecutor, type PlanExecutor } from "./executor.ts";
import type { Gpu } from "./gpu.ts";

/** A persistent input (a KV cache, a value kept from prefill) and the output that updates it after a run. */
export interface StateLink {
  readonly input: string;
  readonly update?: string;
}

/** The output → input copies after a run that keep a model's state. */
export const stateCopies = (state: readonly StateLink[]): { from: string; to: string }[] =>
  state.flatMap((s) => (s.update ? [{ from: s.update, to: s.input }] : []));

/**
 * Generation compiled ahead of time (a generated module carries these as data): a prefill
 * of one right-padded prompt of T tokens, which fills the KV cache and what is kept for
 * decoding, and a decode step of one token at its position; batch 1.
 */
export interface DecodePlans {
  readonly prefill: RunnablePlan;
  readonly decode: RunnablePlan;
  readonly prefillState: readonly StateLink[];
  readonly decodeState: readonly StateLink[];
  /** positions before the text (a concat model's visual tokens) */
  readonly prefix: number;
}

export interface GreedyOptions {
  readonly maxTokens: number;
  /** ids that end the answer (an EOS): generated, then decoding stops */
  readonly stop?: readonly number[];
  /** what fills the prompt window past the prompt (default 0); causal attention never reads it */
  readonly pad?: number;
  /** the tokenizer's BOS id: a prompt starting with it leaves it out of prompt_mask, as in training */
  readonly bos?: number;
}

const argmax = (xs: ArrayLike<number>, from: number, n: number): number => {
  let best = 0;
  for (let i = 1; i < n; i++) if (xs[from + i] > xs[from + best]) best = i;
  return best;
};

/**
 * Greedy decoding with a KV cache from precompiled plans: the decode executor owns the
 * weights and the state, the prefill executor borrows them (runtime/decoder.ts's
 * DeviceDecoder does the same with plans it compiles per prompt length).
 */
export class PlannedDecoder {
  private constructor(
    private readonly plans: DecodePlans,
    private readonly prefill: PlanExecutor,
    readonly decoder: PlanExecutor,
  ) {}

  static async create(gpu: Gpu, plans: DecodePlans, params: ReadonlyMap<string, Tensor>): Promise<PlannedDecoder> {
    const decoder = await createExecutor(gpu, plans.decode, undefined, undefined, { persistent: plans.decodeState.map((s) => s.input) });
    try {
      decoder.writeParams(params);
      const prefill = await createExecutor(gpu, plans.prefill, undefined, undefined, {
        persistent: plans.prefillState.map((s) => s.input),
        shareWith: decoder,
      });
      prefill.writeParams(params);
      return new PlannedDecoder(plans, prefill, decoder);
    } catch (e) {
      decoder.destroy();
      throw e;
    }
  }

  /** The prompt window: how many tokens the prefill takes (a prompt is right-padded to it). */
  get window(): number {
    return this.plans.prefill.inputs.find((i) => i.name === "tokens")!.shape[1];
  }

  /** The KV cache's length: the longest sequence (visual prefix included). */
  get context(): number {
    return this.plans.decode.dims[CONTEXT_DIM];
  }

  /**
   * Greedy ids after `prompt`; `rest`: the prompt's other inputs (an image). Stops after a
   * `stop` id (kept), after `maxTokens`, or when the cache is full.
   */
  async greedy(prompt: readonly number[], rest: ReadonlyMap<string, Tensor>, opts: GreedyOptions): Promise<number[]> {
    const T = this.window;
    if (prompt.length < 1 || prompt.length > T) throw new RangeError(`the prompt has ${prompt.length} tokens: the compiled window holds 1 to ${T}`);
    const feed = new Map(rest);
    feed.set(
      "tokens",
      tensor(
        [1, T],
        Array.from({ length: T }, (_, i) => prompt[i] ?? opts.pad ?? 0),
      ),
    );
    if (this.plans.prefill.inputs.some((i) => i.name === "prompt_mask")) {
      const first = opts.bos !== undefined && prompt[0] === opts.bos ? 1 : 0;
      feed.set(
        "prompt_mask",
        tensor(
          [1, T],
          Array.from({ length: T }, (_, i) => (i >= first && i < prompt.length ? 1 : 0)),
        ),
      );
    }
    const [logits] = await this.prefill.run(feed, { read: ["out"], copies: stateCopies(this.plans.prefillState) });
    const vocab = logits.shape[2];
    let pos = this.plans.prefix + prompt.length;
    let next = argmax(logits.data, (pos - 1) * vocab, vocab);
    const out: number[] = [];
    for (;;) {
      out.push(next);
      if (opts.stop?.includes(next) || out.length >= opts.maxTokens || pos >= this.context) return out;
      const step = new Map([
        ["tokens", tensor([1, 1], [next])],
        [CACHE_POS, tensor([1], [pos])],
      ]);
      const [y] = await this.decoder.run(step, { read: ["out"], copies: stateCopies(this.plans.decodeState) });
      next = argmax(y.data, 0, vocab);
      pos++;
    }
  }

  destroy(): void {
    this.prefill.destroy();
    this.decoder.destroy();
  }
}
