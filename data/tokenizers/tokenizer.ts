import { DataError } from "../data-error.ts";

/**
 * The ids batches and generation treat specially. Any may be missing: Qwen has no BOS,
 * byte-level BPE never needs UNK, llama2.c's vocabulary has no PAD.
 */
export interface SpecialIds {
  pad?: number;
  bos?: number;
  eos?: number;
  unk?: number;
}

export interface EncodeOptions {
  /** Prepend BOS / append EOS (default: neither, so callers that lay out sequences themselves get the text's ids only). */
  bos?: boolean;
  eos?: boolean;
}

export interface DecodeOptions {
  /** Keep the tokenizer's special tokens (BOS, EOS, PAD, chat markers) in the text; by default they are dropped. */
  keepSpecial?: boolean;
}

/** Decodes a sequence one token at a time, e.g. while a model generates it. */
export interface StreamDecoder {
  /** The text `id` settles: "" while a character's bytes or a word the decoder may still rewrite are incomplete. */
  push(id: number): string;
  /** The text still held back. All pushes' texts and this one joined are exactly `decode` of all the ids. */
  flush(): string;
}

/** One interface for our word-level vocabulary, any Hugging Face tokenizer.json and llama2.c's tokenizer.bin. */
export interface Tokenizer {
  /** The file it was read from (or what built it): errors name it. */
  readonly source: string;
  /** Ids run 0..size-1. */
  readonly size: number;
  readonly special: SpecialIds;
  /** What the tokenizer's own files say a model input starts / ends with (HF: add_bos_token or the post-processor; llama2.c: BOS only). */
  readonly addsBos: boolean;
  readonly addsEos: boolean;
  /** Models trained with it separate texts with BOS, so generation stops there too (llama2.c: run.c does). */
  readonly bosEndsText: boolean;
  /** The vocabulary entry of an id (byte-level BPE's are in its byte alphabet, e.g. "Ġworld"), or undefined. */
  token(id: number): string | undefined;
  /** The id of exactly this vocabulary entry, or undefined. */
  id(token: string): number | undefined;
  encode(text: string, opts?: EncodeOptions): number[];
  /** Ids without a vocabulary entry (a model's padded embedding rows) decode to nothing. */
  decode(ids: Iterable<number>, opts?: DecodeOptions): string;
  /** `after`: ids already there (a prompt) whose text is not passed on, but which the new text follows (llama2.c drops the space after BOS). */
  streamDecoder(opts?: DecodeOptions & { after?: readonly number[] }): StreamDecoder;
}

/** A special id the caller cannot do without, or a DataError naming the tokenizer. */
export function requireSpecial(tok: Tokenizer, which: keyof SpecialIds, purpose: string): number {
  const id = tok.special[which];
  if (id === undefined) throw new DataError(`${tok.source}: the tokenizer has no ${which.toUpperCase()} token, which ${purpose} needs`);
  return id;
}

/**
 * The id rows are padded with: PAD, else EOS (llama2.c's vocabulary has no PAD). Padding
 * follows every real token of its row and is masked out of the loss, so under causal
 * attention no real position reads it: any id would do, and EOS is what such models know.
 */
export function padId(tok: Tokenizer, purpose: string): number {
  return tok.special.pad ?? tok.special.eos ?? requireSpecial(tok, "pad", purpose);
}
