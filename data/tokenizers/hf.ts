import { Tokenizer as HfLibrary } from "@huggingface/tokenizers";
import { DataError } from "../data-error.ts";
import { reDecodingStream, trailingReplacements } from "./stream.ts";
import { requireSpecial, type DecodeOptions, type EncodeOptions, type SpecialIds, type Tokenizer } from "./tokenizer.ts";

export interface AddedTokenJson {
  id: number;
  content: string;
  single_word?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  normalized?: boolean;
  special?: boolean;
}

/** `contents` as tokenizer.json's added special tokens, ids 0, 1, … in order. */
export const specialAddedTokens = (contents: readonly string[]): AddedTokenJson[] =>
  contents.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));

/** tokenizer.json (Hugging Face `tokenizers`): the parts read here; the library reads the rest. */
export interface TokenizerJson {
  added_tokens: AddedTokenJson[];
  normalizer: unknown;
  pre_tokenizer: unknown;
  post_processor: unknown;
  decoder: unknown;
  model: { type?: string; vocab?: unknown; unk_token?: string | null; [key: string]: unknown };
  [key: string]: unknown;
}

/** A special token as tokenizer_config.json writes it: the string, or an AddedToken object; null for none. */
type TokenSpec = string | { content: string } | null;

/** tokenizer_config.json (transformers): the fields that change what a tokenizer does. */
export interface TokenizerConfig {
  bos_token?: TokenSpec;
  eos_token?: TokenSpec;
  pad_token?: TokenSpec;
  unk_token?: TokenSpec;
  add_bos_token?: boolean;
  add_eos_token?: boolean;
  clean_up_tokenization_spaces?: boolean;
  added_tokens_decoder?: Record<string, Omit<AddedTokenJson, "id">>;
  [key: string]: unknown;
}

/** Where neither tokenizer_config.json nor the model names a special token: the names tokenizers conventionally give it. */
const CONVENTIONAL_NAMES: Record<keyof SpecialIds, string[]> = {
  pad: ["<pad>", "[PAD]", "<|pad|>"],
  bos: ["<bos>", "<s>", "[CLS]", "<|begin_of_text|>", "<|startoftext|>"],
  eos: ["<eos>", "</s>", "[SEP]", "<|end_of_text|>", "<|endoftext|>"],
  unk: ["<unk>", "[UNK]"],
};

/**
 * transformers' clean-up (and Replace decoders like it) rewrite a space and up to three characters after
 * it (" n't" → "n't", " ." → "."), so a stream holds back a space that close to the end.
 */
const CLEANUP_REACH = 4;

const tokenContent = (spec: TokenSpec | undefined) => (spec == null ? undefined : typeof spec === "string" ? spec : spec.content);

/**
 * Any tokenizer.json (BPE, byte-fallback SentencePiece BPE, WordPiece, Unigram, WordLevel) through
 * `@huggingface/tokenizers`, with tokenizer_config.json's special tokens, BOS/EOS flags and added tokens
 * (`config` undefined where there is none).
 */
export function hfTokenizer(json: unknown, config: unknown, source: string): Tokenizer {
  if (!isTokenizerJson(json)) throw new DataError(`${source}: not a Hugging Face tokenizer.json (no "model" section with a vocabulary)`);
  if (config !== undefined && (typeof config !== "object" || config === null || Array.isArray(config)))
    throw new DataError(`${source}: its tokenizer_config.json is not a JSON object`);
  const cfg = (config ?? {}) as TokenizerConfig;
  // The library takes added tokens from tokenizer.json only; a config may declare more.
  const known = new Set((json.added_tokens ?? []).map((a) => a.id));
  const fromConfig = Object.entries(cfg.added_tokens_decoder ?? {})
    .filter(([id]) => !known.has(Number(id)))
    .map(([id, t]) => ({ ...t, id: Number(id) }));
  // It also reads the special tokens from the config as plain strings, and a WordLevel model's unknown word only from there.
  const libraryConfig = {
    ...cfg,
    bos_token: tokenContent(cfg.bos_token),
    eos_token: tokenContent(cfg.eos_token),
    pad_token: tokenContent(cfg.pad_token),
    unk_token: tokenContent(cfg.unk_token) ?? json.model.unk_token ?? undefined,
  };
  try {
    const lib = new HfLibrary({ ...json, added_tokens: [...(json.added_tokens ?? []), ...fromConfig] }, libraryConfig);
    // Inside the try: the constructor encodes a probe, which is where a pattern the library cannot translate shows.
    return new HfTokenizer(lib, specialIds(lib, json, cfg), cfg, source);
  } catch (e) {
    throw new DataError(`${source}: the Hugging Face tokenizers library cannot load it: ${(e as Error).message}`);
  }
}

function isTokenizerJson(json: unknown): json is TokenizerJson {
  const model = (json as TokenizerJson | null)?.model;
  return typeof json === "object" && json !== null && typeof model === "object" && model !== null && typeof model.vocab === "object" && model.vocab !== null;
}

function specialIds(lib: HfLibrary, json: TokenizerJson, cfg: TokenizerConfig): SpecialIds {
  const find = (which: keyof SpecialIds) => {
    const key = `${which}_token` as const;
    // A config that names the token (or says null: there is none) is the authority.
    if (key in cfg) return lookup(lib, tokenContent(cfg[key]));
    const names = which === "unk" && json.model.unk_token ? [json.model.unk_token, ...CONVENTIONAL_NAMES.unk] : CONVENTIONAL_NAMES[which];
    return names.map((n) => lookup(lib, n)).find((id) => id !== undefined);
  };
  const ids: SpecialIds = {};
  for (const which of ["pad", "bos", "eos", "unk"] as const) {
    const id = find(which);
    if (id !== undefined) ids[which] = id;
  }
  return ids;
}

const lookup = (lib: HfLibrary, token: string | undefined) => (token === undefined ? undefined : lib.token_to_id(token));

class HfTokenizer implements Tokenizer {
  readonly size: number;
  readonly addsBos: boolean;
  readonly addsEos: boolean;
  /** Hugging Face models end a text with EOS. */
  readonly bosEndsText = false;

  constructor(
    private readonly lib: HfLibrary,
    readonly special: SpecialIds,
    cfg: TokenizerConfig,
    readonly source: string,
  ) {
    this.size = lib.model?.vocab.length ?? 0;
    // Without add_bos_token/add_eos_token in the config, the post-processor's template decides, as in transformers.
    const plain = lib.encode("a", { add_special_tokens: false }).ids;
    const full = lib.encode("a", { add_special_tokens: true }).ids;
    const { bos, eos } = special;
    this.addsBos = cfg.add_bos_token ?? (bos !== undefined && full[0] === bos && plain[0] !== bos);
    this.addsEos = cfg.add_eos_token ?? (eos !== undefined && full.at(-1) === eos && plain.at(-1) !== eos);
  }

  token(id: number): string | undefined {
    return this.lib.id_to_token(id);
  }

  id(token: string): number | undefined {
    return this.lib.token_to_id(token);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    // BOS/EOS are added here from the flags, not by the post-processor, so add_bos_token and the template cannot both add one.
    const { ids, tokens } = this.lib.encode(text, { add_special_tokens: false });
    const missing = ids.findIndex((id: number | undefined) => id === undefined);
    if (missing >= 0) throw new DataError(`${this.source}: "${tokens[missing]}" is not in the vocabulary and the tokenizer has no UNK token`);
    if (opts.bos) ids.unshift(requireSpecial(this, "bos", "encoding with BOS"));
    if (opts.eos) ids.push(requireSpecial(this, "eos", "encoding with EOS"));
    return ids;
  }

  decode(ids: Iterable<number>, opts: DecodeOptions = {}): string {
    const known = [...ids].filter((id) => this.lib.id_to_token(id) !== undefined);
    return known.length === 0 ? "" : this.lib.decode(known, { skip_special_tokens: !opts.keepSpecial });
  }

  streamDecoder(opts: DecodeOptions & { after?: readonly number[] } = {}) {
    return reDecodingStream(
      (ids) => this.decode(ids, opts),
      (text) => {
        const space = text.lastIndexOf(" ");
        const cleanable = space >= 0 && space >= text.length - CLEANUP_REACH ? text.length - space : 0;
        return Math.max(cleanable, trailingReplacements(text));
      },
      opts.after,
    );
  }
}
