import { DataError } from "./data-error.ts";

export const PAD = 0;
export const BOS = 1;
export const EOS = 2;
export const UNK = 3;
export const SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"] as const;

/** The tiny model's embedding table. */
export const MAX_VOCAB = 512;

/** Words (hyphenated ones whole: "t-shirt", "top-left") and single punctuation marks: "(A)" → "(", "A", ")". */
const PIECE = /[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*|[^\sA-Za-z0-9]/g;

export function preTokenize(text: string): string[] {
  return text.match(PIECE) ?? [];
}

/**
 * Lowercase, except a lone capital letter: option letters must stay apart from the article "a"
 * (the model answers with the letter token, and "The answer is a." would be ambiguous).
 */
export function foldCase(piece: string): string {
  return /^[A-Z]$/.test(piece) ? piece : piece.toLowerCase();
}

export interface SpecialIds {
  pad: number;
  bos: number;
  eos: number;
  unk: number;
}

export interface Tokenizer {
  readonly tokens: readonly string[];
  /** Ours are 0..3; a foreign tokenizer.json may number them otherwise, so batches ask here. */
  readonly special: SpecialIds;
  readonly size: number;
  id(piece: string): number;
  encode(text: string): number[];
  decode(ids: Iterable<number>, opts?: { keepSpecial?: boolean }): string;
}

const NO_SPACE_BEFORE = new Set([".", ",", "?", "!", ":", ";", ")"]);

class WordLevel implements Tokenizer {
  private readonly vocab: Map<string, number>;

  constructor(
    readonly tokens: readonly string[],
    readonly special: SpecialIds,
    private readonly lowercase: boolean,
  ) {
    this.vocab = new Map(tokens.map((t, i) => [t, i]));
  }

  get size(): number {
    return this.tokens.length;
  }

  /** Exact piece first, then its folded form: serves our vocab (folded) and a foreign case-sensitive one alike. */
  id(piece: string): number {
    const p = this.lowercase ? piece.toLowerCase() : piece;
    return this.vocab.get(p) ?? this.vocab.get(foldCase(p)) ?? this.special.unk;
  }

  encode(text: string): number[] {
    return preTokenize(text).map((p) => this.id(p));
  }

  decode(ids: Iterable<number>, opts: { keepSpecial?: boolean } = {}): string {
    let out = "";
    for (const i of ids) {
      const { pad, bos, eos, unk } = this.special;
      if (!opts.keepSpecial && (i === pad || i === bos || i === eos)) continue;
      const t = this.tokens[i] ?? this.tokens[unk];
      const glue = out === "" || out.endsWith("(") || NO_SPACE_BEFORE.has(t);
      out += glue ? t : ` ${t}`;
    }
    return out;
  }
}

/** Most frequent folded pieces first, ties alphabetical, so the same text always gives the same ids. */
export function buildTokenizer(texts: Iterable<string>, maxVocab = MAX_VOCAB): Tokenizer {
  const counts = new Map<string, number>();
  for (const text of texts) for (const p of preTokenize(text)) counts.set(foldCase(p), (counts.get(foldCase(p)) ?? 0) + 1);
  for (const s of SPECIAL_TOKENS) counts.delete(s);
  const words = [...counts].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0)).map(([w]) => w);
  return new WordLevel([...SPECIAL_TOKENS, ...words.slice(0, maxVocab - SPECIAL_TOKENS.length)], { pad: PAD, bos: BOS, eos: EOS, unk: UNK }, false);
}

/** HuggingFace `tokenizers` JSON (WordLevel model), so one load path serves ours and real ones. */
export interface TokenizerJson {
  version: string;
  added_tokens: { id: number; content: string; single_word: boolean; lstrip: boolean; rstrip: boolean; normalized: boolean; special: boolean }[];
  normalizer: { type: string; normalizers?: { type: string }[] } | null;
  pre_tokenizer: unknown;
  post_processor: unknown;
  decoder: unknown;
  model: { type: string; vocab: Record<string, number>; unk_token: string };
  [key: string]: unknown;
}

/**
 * HF normalizers cannot say "lowercase all but lone capitals", so the file carries no normalizer and a
 * lowercase vocabulary; `id` folds case on lookup. HF itself would map capitalised words to <unk>.
 */
export function tokenizerToJson(tok: Tokenizer): TokenizerJson {
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((content) => ({ id: tok.id(content), content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [{ type: "WhitespaceSplit" }, { type: "Split", pattern: { Regex: PIECE.source }, behavior: "Isolated", invert: false }],
    },
    post_processor: null,
    decoder: null,
    model: { type: "WordLevel", vocab: Object.fromEntries(tok.tokens.map((t, i) => [t, i])), unk_token: tok.tokens[tok.special.unk] },
  };
}

export function tokenizerFromJson(json: TokenizerJson, what = "tokenizer.json"): Tokenizer {
  if (json?.model?.type !== "WordLevel") throw new DataError(`${what}: model type ${json?.model?.type ?? "(none)"} unsupported (only WordLevel)`);
  const tokens: string[] = [];
  for (const [t, i] of Object.entries(json.model.vocab)) tokens[i] = t;
  for (const a of json.added_tokens ?? []) tokens[a.id] = a.content;
  const hole = tokens.findIndex((t) => t === undefined);
  if (hole >= 0 || tokens.length === 0) throw new DataError(`${what}: vocabulary ids are not 0..n-1 (id ${hole} missing)`);
  const find = (names: string[]) => {
    const i = names.map((n) => tokens.indexOf(n)).find((k) => k >= 0);
    if (i === undefined) throw new DataError(`${what}: no ${names.join(" / ")} token`);
    return i;
  };
  const special = {
    pad: find(["<pad>", "[PAD]"]),
    bos: find(["<bos>", "<s>", "[CLS]"]),
    eos: find(["<eos>", "</s>", "[SEP]"]),
    unk: find([json.model.unk_token, "<unk>", "[UNK]"]),
  };
  const norms = json.normalizer?.type === "Sequence" ? (json.normalizer.normalizers ?? []) : json.normalizer ? [json.normalizer] : [];
  return new WordLevel(tokens, special, norms.some((n) => n.type === "Lowercase"));
}
