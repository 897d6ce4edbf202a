import { UserError } from "../grammar/diagnostics.ts";
import type { Tokenizer } from "../data/tokenizers/tokenizer.ts";

/** The ids a generation starts from: BOS (where the tokenizer has one) and the prompt's text. */
export function promptIds(tok: Tokenizer, text: string): number[] {
  const ids = tok.encode(text, { bos: tok.special.bos !== undefined });
  if (!ids.length) throw new UserError(`${tok.source}: the tokenizer has no BOS token, so an empty prompt gives the model nothing to continue: pass --prompt`);
  return ids;
}

/** Tokens that end a generation: EOS, and BOS where the tokenizer's models separate documents with it (llama2.c's run.c stops there). */
export function stopIds(tok: Tokenizer): Set<number> {
  return new Set([tok.special.eos, ...(tok.bosEndsText ? [tok.special.bos] : [])].filter((x): x is number => x !== undefined));
}
