import { Tokenizer as HfLibrary } from "@huggingface/tokenizers";
import { specialAddedTokens, type TokenizerConfig, type TokenizerJson } from "./hf.ts";

/** Our vocabulary's first four ids. */
export const PAD = 0;
export const BOS = 1;
export const EOS = 2;
export const UNK = 3;
export const SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"] as const;

/** The tiny model's embedding table. */
export const MAX_VOCAB = 512;

/**
 * Words (hyphenated ones whole: "t-shirt", "top-left") and single punctuation marks: "(A)" → "(", "A", ")".
 * Case is kept: HF normalizers cannot lowercase all but a lone capital, and option letters must stay
 * apart from the article "a" (the model answers with the letter token), so "The" and "the" are two words.
 */
const PIECE = "[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*|[^\\sA-Za-z0-9]";

/** "bags ?" → "bags?", "( A )" → "(A)": marks written without a space before them, and after "(". */
const GLUED = [...[".", ",", "?", "!", ":", ";", ")"].map((p) => [` ${p}`, p]), ["( ", "("]];

export interface TokenizerFiles {
  json: TokenizerJson;
  config: TokenizerConfig;
}

/** A standard WordLevel tokenizer.json + tokenizer_config.json over `words` (ids from 4 on, in order). */
function wordLevelFiles(words: readonly string[]): TokenizerFiles {
  const [pad, bos, eos, unk] = SPECIAL_TOKENS;
  const json: TokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specialAddedTokens(SPECIAL_TOKENS),
    normalizer: null,
    // Whitespace first, so the pattern's Isolated split leaves no whitespace pieces behind.
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [{ type: "WhitespaceSplit" }, { type: "Split", pattern: { Regex: PIECE }, behavior: "Isolated", invert: false }],
    },
    // Model inputs start with <bos> (the batches put it there), so HF users get it by default too.
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { [bos]: { id: bos, ids: [BOS], tokens: [bos] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        // WordPiece's decoder joins with spaces (no piece starts with its "##"), then the punctuation is glued back on.
        { type: "WordPiece", prefix: "##", cleanup: false },
        { type: "Fuse" },
        ...GLUED.map(([from, to]) => ({ type: "Replace", pattern: { String: from }, content: to })),
      ],
    },
    model: { type: "WordLevel", vocab: Object.fromEntries([...SPECIAL_TOKENS, ...words].map((t, i) => [t, i])), unk_token: unk },
  };
  const config: TokenizerConfig = {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: bos,
    eos_token: eos,
    pad_token: pad,
    unk_token: unk,
    add_bos_token: true,
    add_eos_token: false,
    // The decoder above does it, so transformers, tokenizers and tokenizers.js all decode alike.
    clean_up_tokenization_spaces: false,
  };
  return { json, config };
}

/**
 * The default dataset's vocabulary: the pieces of `texts` as the tokenizer.json's own pre-tokenizer
 * splits them (so counting and encoding cannot disagree), most frequent first, ties in code-unit
 * order, so the same text always gives the same ids.
 */
export function buildWordLevel(texts: Iterable<string>, maxVocab = MAX_VOCAB): TokenizerFiles {
  const empty = wordLevelFiles([]);
  const splitter = new HfLibrary(empty.json, empty.config);
  const counts = new Map<string, number>();
  for (const text of texts) for (const p of splitter.tokenize(text)) counts.set(p, (counts.get(p) ?? 0) + 1);
  for (const s of SPECIAL_TOKENS) counts.delete(s);
  const words = [...counts].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0)).map(([w]) => w);
  return wordLevelFiles(words.slice(0, maxVocab - SPECIAL_TOKENS.length));
}
