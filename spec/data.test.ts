import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { encodeText, epochShuffler, lmBatch, textBatch, vitBatch, type EncodedExample } from "../data/batches.ts";
import { buildDefaultData, type Manifest } from "../data/build.ts";
import { captionParts, type CocoDataset, describePositions } from "../data/captions.ts";
import {
  composeClasses,
  DIM,
  itemPool,
  type Look,
  type Quad,
  randomComposites,
  renderComposite,
  SMALL as SMALL_ITEM,
  type Composite,
} from "../data/composites.ts";
import { CLASS_GROUP, loadFashionMnist, parseIdx, type FashionMnist } from "../data/fashion-mnist.ts";
import { FILES, loadDataset, readIndex, type LoadedDataset } from "../data/loader.ts";
import { PIXEL_MEAN, PIXEL_STD } from "../data/preprocess.ts";
import { promptFormat } from "../data/prompts.ts";
import { promptParts, QUESTION_TYPES, type PidSplits, type Problem, type Problems, type QuestionType } from "../data/scienceqa.ts";
import { answerFromItems } from "../data/answer-from-items.ts";
import { solutionRight } from "../eval/evaluate.ts";
import type { TokenizerConfig, TokenizerJson } from "../data/tokenizers/hf.ts";
import type { Tokenizer } from "../data/tokenizers/tokenizer.ts";
import { BOS, buildWordLevel, EOS, MAX_VOCAB, PAD, UNK } from "../data/tokenizers/word-level.ts";
import { oversampled, solutionGivenTexts, trainingTexts } from "../data/examples.ts";
import { taskData } from "../train/tasks.ts";
import { fcRuns } from "./fc-runs.ts";

const SMALL = { seed: 7, train: 200, val: 50, test: 50 } as const;
const PROBLEM_KEYS = [
  "answer",
  "category",
  "choices",
  "grade",
  "hint",
  "image",
  "lecture",
  "question",
  "skill",
  "solution",
  "split",
  "subject",
  "task",
  "topic",
];

const readJson = <T>(dir: string, name: string) => JSON.parse(readFileSync(join(dir, name), "utf8")) as T;

let root: string;
let dir: string;
let ds: LoadedDataset;
let tok: Tokenizer;
let trainMnist: FashionMnist;
let testMnist: FashionMnist;

before(async () => {
  root = mkdtempSync(join(tmpdir(), "dehvf-data-"));
  dir = join(root, "small");
  trainMnist = loadFashionMnist("train");
  testMnist = loadFashionMnist("t10k");
  await buildDefaultData(dir, SMALL);
  ds = await loadDataset(dir);
  tok = ds.tokenizer!;
});

after(() => rmSync(root, { recursive: true, force: true }));

describe("fashion-mnist IDX reader", () => {
  test("60000 train / 10000 test images of 28×28, 6000 / 1000 per class", () => {
    for (const [m, n] of [
      [trainMnist, 60000],
      [testMnist, 10000],
    ] as const) {
      assert.equal(m.n, n);
      assert.equal(m.images.length, n * 28 * 28);
      assert.equal(m.labels.length, n);
      const hist = new Array(10).fill(0);
      for (const l of m.labels) hist[l]++;
      assert.deepEqual(hist, new Array(10).fill(n / 10));
    }
  });

  test("rejects malformed data and names the package when files are missing", () => {
    assert.throws(() => parseIdx(new Uint8Array([1, 2, 8, 1])), /bad magic/);
    assert.throws(() => parseIdx(new Uint8Array([0, 0, 8, 1, 0, 0, 0, 5, 1, 2])), /header says 5/);
    assert.deepEqual(parseIdx(new Uint8Array([0, 0, 8, 1, 0, 0, 0, 2, 7, 9])).dims, [2]);
    assert.throws(
      () => loadFashionMnist("train", join(root, "nowhere")),
      (e: Error) => e.message.includes(join(root, "nowhere")) && /apt-get install dataset-fashion-mnist/.test(e.message) && /npm run setup/.test(e.message),
    );
  });
});

describe("composites", () => {
  test("deterministic per seed, and each quadrant is its source image", () => {
    const pool = itemPool(trainMnist, "train");
    assert.deepEqual(randomComposites(pool, 20, 3), randomComposites(pool, 20, 3));
    assert.notDeepEqual(randomComposites(pool, 20, 3), randomComposites(pool, 20, 4));
    for (const c of randomComposites(pool, 5, 1)) {
      // drawn plain (bright, large), each quadrant is exactly its source image
      const px = renderComposite(pool, { ...c, looks: undefined });
      c.sources.forEach((src, q) => {
        assert.equal(trainMnist.labels[src], c.classes[q]);
        for (let y = 0; y < 28; y++)
          for (let x = 0; x < 28; x++) assert.equal(px[((q >> 1) * 28 + y) * 56 + (q & 1) * 28 + x], trainMnist.images[src * 784 + y * 28 + x]);
      });
    }
  });

  test("looks: a dim item is DIM of its pixels, a small one is shrunk into the centre of its quadrant with a black border", () => {
    const pool = itemPool(trainMnist, "train");
    const [c] = randomComposites(pool, 1, 5);
    const plain = renderComposite(pool, { ...c, looks: undefined });
    const dim = renderComposite(pool, { ...c, looks: [0, 1, 2, 3].map(() => ({ bright: false, large: true })) as Quad<Look> });
    plain.forEach((v, i) => assert.equal(dim[i], Math.round(v * DIM)));
    const small = renderComposite(pool, { ...c, looks: [0, 1, 2, 3].map(() => ({ bright: true, large: false })) as Quad<Look> });
    const border = (28 - SMALL_ITEM) / 2;
    for (let q = 0; q < 4; q++)
      for (let y = 0; y < 28; y++)
        for (let x = 0; x < 28; x++) {
          const inside = y >= border && y < border + SMALL_ITEM && x >= border && x < border + SMALL_ITEM;
          if (!inside) assert.equal(small[((q >> 1) * 28 + y) * 56 + (q & 1) * 28 + x], 0);
        }
    const ink = (px: Uint8Array) => px.reduce((a, v) => a + v, 0);
    assert.ok(ink(small) < 0.6 * ink(plain) && ink(small) > 0.25 * ink(plain), "a small item keeps its shape at about (18/28)² of its ink");
  });

  test("a pool restricted to some indices never draws others", () => {
    const pool = itemPool(
      testMnist,
      "t10k",
      Array.from({ length: 100 }, (_, i) => i),
    );
    const rand = () => 0.999;
    const c = composeClasses(pool, [0, 1, 2, 3], rand);
    assert.ok(c.sources.every((s) => s < 100));
  });

  test("train images come from the train split only, val and test from disjoint halves of t10k", () => {
    const grids = readJson<Record<string, Composite>>(dir, FILES.grids);
    const splits = readJson<PidSplits>(dir, FILES.splits);
    const sources = (s: keyof PidSplits) => splits[s].flatMap((pid) => grids[pid].sources);
    assert.ok(splits.train.every((pid) => grids[pid].split === "train"));
    assert.ok([...splits.val, ...splits.test].every((pid) => grids[pid].split === "t10k"));
    const val = new Set(sources("val"));
    assert.ok(
      sources("test").every((s) => !val.has(s)),
      "val and test share a source image",
    );
  });
});

describe("ScienceQA-shaped problems", () => {
  test("problems.json / pid_splits.json have ScienceQA's shape", () => {
    const problems = readJson<Problems>(dir, FILES.problems);
    const splits = readJson<PidSplits>(dir, FILES.splits);
    assert.deepEqual(Object.keys(splits), ["train", "val", "test"]);
    assert.deepEqual([splits.train.length, splits.val.length, splits.test.length], [SMALL.train, SMALL.val, SMALL.test]);
    const all = [...splits.train, ...splits.val, ...splits.test];
    assert.equal(new Set(all).size, all.length);
    assert.deepEqual(new Set(all), new Set(Object.keys(problems)));
    for (const [split, pids] of Object.entries(splits))
      for (const pid of pids) {
        const p = problems[pid];
        assert.deepEqual(Object.keys(p).sort(), PROBLEM_KEYS);
        assert.equal(p.split, split);
        assert.equal(p.image, "image.png");
        assert.equal(p.task, "closed choice");
        assert.ok(QUESTION_TYPES.includes(p.category as (typeof QUESTION_TYPES)[number]));
        assert.ok(Number.isInteger(p.answer) && p.answer >= 0 && p.answer < p.choices.length);
        assert.equal(new Set(p.choices).size, p.choices.length, `pid ${pid}: repeated choice`);
        assert.ok(existsSync(join(dir, "images", pid, "image.png")));
      }
  });

  test("answers are balanced per question type: letters, values, yes/no", () => {
    const problems = Object.values(readJson<Problems>(dir, FILES.problems)).filter((p) => p.split === "train");
    for (const type of QUESTION_TYPES) {
      const ps = problems.filter((p) => p.category === type);
      assert.ok(ps.length >= Math.floor(SMALL.train / QUESTION_TYPES.length) - 1, `${type}: ${ps.length} problems`);
      for (const n of new Set(ps.map((p) => p.choices.length))) {
        const same = ps.filter((p) => p.choices.length === n);
        const letters = new Array(n).fill(0);
        for (const p of same) letters[p.answer]++;
        // options come in a fixed order, so letters follow the (balanced) answers: roughly even, not exact
        assert.ok(Math.max(...letters) <= Math.max(0.55, 1.8 / n) * same.length + 2, `${type}/${n}: letters ${letters}`);
      }
      const values = new Map<string, number>();
      for (const p of ps) values.set(p.choices[p.answer], (values.get(p.choices[p.answer]) ?? 0) + 1);
      assert.ok(Math.max(...values.values()) <= 0.6 * ps.length, `${type}: answers ${[...values]}`);
    }
    const presence = problems.filter((p) => p.category === "presence");
    assert.ok(Math.abs(presence.filter((p) => p.choices[p.answer] === "yes").length - presence.length / 2) <= 1);
  });

  test("options are in one fixed order per question type", () => {
    const order = [
      "yes",
      "no",
      "0",
      "1",
      "2",
      "3",
      "4",
      "top",
      "trousers",
      "dress",
      "footwear",
      "bag",
      "t-shirt",
      "pullover",
      "coat",
      "sandal",
      "shirt",
      "sneaker",
      "ankle boot",
      "bright",
      "dim",
      "large",
      "small",
    ];
    for (const p of Object.values(readJson<Problems>(dir, FILES.problems))) {
      const ranks = p.choices.map((c) => order.indexOf(c));
      assert.ok(
        ranks.every((r, i) => r >= 0 && (i === 0 || r > ranks[i - 1])),
        `${p.question}: ${p.choices.join(", ")}`,
      );
    }
  });

  test("the answer is true of the picture", () => {
    const problems = readJson<Problems>(dir, FILES.problems);
    const grids = readJson<Record<string, Composite>>(dir, FILES.grids);
    const fine = ["t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];
    const groupWord = { top: /\btops?\b/, trousers: /trousers/, dress: /dress/, footwear: /footwear|shoes/, bag: /\bbags?\b/ } as const;
    for (const [pid, p] of Object.entries(problems)) {
      const classes = grids[pid].classes;
      const answer = p.choices[p.answer];
      const quad = ["top-left", "top-right", "bottom-left", "bottom-right"].findIndex((q) => new RegExp(`the ${q}\\b`).test(p.question));
      if (p.category === "position-fine") assert.equal(answer, fine[classes[quad]]);
      if (p.category === "position-coarse") assert.equal(answer, CLASS_GROUP[classes[quad]]);
      if (p.category === "brightness") assert.equal(answer, grids[pid].looks![quad].bright ? "bright" : "dim");
      if (p.category === "size") assert.equal(answer, grids[pid].looks![quad].large ? "large" : "small");
      // the solution restates the description's words for the asked quadrant (and names the answer), or is empty
      if (quad >= 0) {
        assert.ok(describePositions(classes as Quad<number>, grids[pid].looks).includes(p.solution.slice(0, -1)), `${pid}: ${p.solution}`);
        assert.ok(p.solution.startsWith(`${["top-left", "top-right", "bottom-left", "bottom-right"][quad]} a `) && p.solution.endsWith("."), p.solution);
        if (p.category !== "position-coarse") assert.ok(p.solution.includes(answer), `${pid}: ${p.solution} / ${answer}`);
      } else
        assert.equal(
          p.solution,
          `${classes
            .map((c) => CLASS_GROUP[c])
            .join(", ")
            .replace(/, (\w+)$/, " and $1")}.`,
        );
      if (p.category === "count" || p.category === "presence") {
        const groups = classes.map((c) => CLASS_GROUP[c]);
        const asked = (Object.keys(groupWord) as (keyof typeof groupWord)[]).filter((g) => groupWord[g].test(p.question));
        assert.equal(asked.length, 1, p.question);
        const n = groups.filter((g) => g === asked[0]).length;
        assert.equal(answer, p.category === "count" ? String(n) : n > 0 ? "yes" : "no", `${pid}: ${p.question}`);
      }
    }
  });

  test("answers from item scores: each semantic question answered as the scores' classes say; none for looks or unknown questions", () => {
    const problems = Object.values(readJson<Problems>(dir, FILES.problems));
    const fine = ["t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];
    const groupWord = { top: /\btops?\b/, trousers: /trousers/, dress: /dress/, footwear: /footwear|shoes/, bag: /\bbags?\b/ } as const;
    const argmax = (xs: readonly number[]) => xs.indexOf(Math.max(...xs));
    // distinct scores, so the best class is unique
    const scoresArb = fc.array(fc.uniqueArray(fc.integer({ min: -1000, max: 1000 }), { minLength: 10, maxLength: 10 }), { minLength: 4, maxLength: 4 });
    fc.assert(
      fc.property(fc.constantFrom(...problems), scoresArb, (p, scores) => {
        const got = answerFromItems(p, scores);
        const quad = ["top-left", "top-right", "bottom-left", "bottom-right"].findIndex((q) => p.question.includes(`the ${q}?`));
        const groups = scores.map((s) => CLASS_GROUP[argmax(s)]);
        const asked = (Object.keys(groupWord) as (keyof typeof groupWord)[]).find((g) => groupWord[g].test(p.question))!;
        const n = groups.filter((g) => g === asked).length;
        const offered = p.choices.map((c) => fine.indexOf(c));
        const expected = {
          presence: () => (n > 0 ? "yes" : "no"),
          count: () => String(n),
          "position-coarse": () => groups[quad],
          "position-fine": () => fine[offered[argmax(offered.map((c) => scores[quad][c]))]],
          brightness: () => undefined,
          size: () => undefined,
        }[p.category as QuestionType]();
        assert.equal(got, expected, `${p.question} ${p.choices.join("/")}`);
      }),
      fcRuns(300),
    );
    // the true classes ranked first answer every semantic question right
    const grids = readJson<Record<string, Composite>>(dir, FILES.grids);
    for (const [pid, p] of Object.entries(readJson<Problems>(dir, FILES.problems))) {
      const oneHot = grids[pid].classes.map((c) => fine.map((_, k) => (k === c ? 1 : 0)));
      const got = answerFromItems(p, oneHot);
      if (p.skill === "low-level") assert.equal(got, undefined);
      else assert.equal(got, p.choices[p.answer], `${pid}: ${p.question}`);
    }
    const oneHot = [0, 1, 2, 3].map(() => fine.map((_, k) => (k === 0 ? 1 : 0)));
    assert.equal(answerFromItems({ question: "Is there a cat in the picture?", category: "presence", choices: ["yes", "no"] }, oneHot), undefined);
    assert.equal(answerFromItems({ question: "What is in the middle?", category: "position-fine", choices: ["coat", "shirt"] }, oneHot), undefined);
  });

  test("a generated answer's solution is the reference's only when every word of it is", () => {
    const ec = promptFormat("QCM-EC");
    const problems = Object.values(readJson<Problems>(dir, FILES.problems)).slice(0, 60);
    for (const p of problems) {
      const reference = ec.answer(p, p.answer);
      assert.equal(solutionRight(tok, ec, p, reference), true, reference);
      // the right solution and a wrong option: the solution is still right
      const other = (p.answer + 1) % p.choices.length;
      assert.equal(solutionRight(tok, ec, p, ec.answer(p, other)), true);
      // one word of the solution changed: wrong, whatever follows
      const words = p.solution.split(" ");
      const k = words.length - 1;
      const changed = [...words.slice(0, k), words[k] === "bag." ? "top." : "bag."].join(" ");
      assert.equal(solutionRight(tok, ec, p, reference.replace(p.solution, changed)), false, changed);
      assert.equal(solutionRight(tok, ec, p, ""), false);
      // no solution in the answer: nothing to say
      assert.equal(solutionRight(tok, promptFormat("QCM-C"), p, `The answer is ${p.choices[p.answer]}.`), undefined);
    }
  });

  test("confusable classes are offered together in fine position questions", () => {
    const tops = ["t-shirt", "pullover", "coat", "shirt"];
    for (const p of Object.values(readJson<Problems>(dir, FILES.problems)))
      if (p.category === "position-fine" && tops.includes(p.choices[p.answer])) assert.deepEqual([...p.choices].sort(), [...tops].sort());
  });

  test("prompt text is ScienceQA's QCM→A format", () => {
    const p: Problem = { ...ds.splits.train!.vqa[0].problem, question: "Is there a bag in the picture?", choices: ["no", "yes"], answer: 1 };
    const { prompt, answer } = promptParts(p);
    assert.equal(`${prompt} ${answer}`, "Question: Is there a bag in the picture? Options: (A) no (B) yes Answer: The answer is B.");
  });
});

describe("COCO-Karpathy-shaped captions", () => {
  test("dataset_coco.json has Karpathy's shape and shares the VQA images", () => {
    const coco = readJson<CocoDataset>(dir, FILES.captions);
    const m = readJson<Manifest>(dir, FILES.manifest);
    assert.deepEqual(Object.keys(coco).sort(), ["dataset", "images"]);
    assert.equal(coco.images.length, m.captionImages.train + m.captionImages.val + m.captionImages.test);
    const sentids = new Set<number>();
    coco.images.forEach((im, i) => {
      assert.deepEqual(Object.keys(im).sort(), ["cocoid", "filename", "filepath", "imgid", "sentences", "split"]);
      assert.equal(im.imgid, i);
      assert.equal(im.sentences.length, 5);
      assert.equal(new Set(im.sentences.map((s) => s.raw)).size, 5, "five different phrasings");
      for (const s of im.sentences) {
        assert.deepEqual(Object.keys(s).sort(), ["imgid", "raw", "sentid", "tokens"]);
        assert.equal(s.imgid, im.imgid);
        assert.ok(s.tokens.length > 0 && s.tokens.every((t) => t === t.toLowerCase() && /^[a-z0-9-]+$/.test(t)));
        sentids.add(s.sentid);
      }
      assert.equal(im.filepath, `images/${im.cocoid}`);
      assert.equal(ds.problems[String(im.cocoid)].split, im.split);
    });
    assert.equal(sentids.size, coco.images.length * 5);
  });
});

describe("tokenizer", () => {
  const trainTexts = () => [
    ...ds.splits.train!.vqa.map((v) => promptParts(v.problem)),
    ...ds.splits.train!.captions.flatMap((c) => c.captions.map(captionParts)),
  ];

  test("covers the training text, fits the model, keeps answer letters single tokens", () => {
    assert.ok(tok.size <= MAX_VOCAB);
    for (const t of trainTexts()) assert.ok(!encodeText(tok, t).prompt.concat(encodeText(tok, t).answer).includes(tok.special.unk!), t.prompt);
    for (const L of "ABCD") assert.equal(tok.encode(`(${L})`).length, 3);
    assert.ok(tok.id("A") !== undefined && tok.id("a") !== undefined && tok.id("A") !== tok.id("a"));
    // Case is kept: the sentence's "The" is its own word.
    assert.ok(tok.id("The") !== undefined && tok.id("the") !== undefined && tok.id("The") !== tok.id("the"));
    assert.deepEqual(tok.encode("The answer is C."), [tok.id("The"), tok.id("answer"), tok.id("is"), tok.id("C"), tok.id(".")]);
    const prompt = "Question: How many bags? Options: (A) 1 (B) 2 Answer: The answer is A.";
    assert.equal(tok.decode(tok.encode(prompt)), prompt);
    assert.equal(tok.encode("zebra")[0], tok.special.unk);
    assert.deepEqual(tok.special, { pad: PAD, bos: BOS, eos: EOS, unk: UNK });
  });

  test("decode then encode gives the same ids (any token sequence)", () => {
    const ids = fc.array(fc.integer({ min: 4, max: tok.size - 1 }), { maxLength: 30 });
    fc.assert(
      fc.property(ids, (xs) => assert.deepEqual(tok.encode(tok.decode(xs)), xs)),
      fcRuns(300),
    );
  });

  test("tokenizer.json is a standard WordLevel HF file, rebuilt identically from the training text", () => {
    const json = readJson<TokenizerJson>(dir, FILES.tokenizer);
    const config = readJson<TokenizerConfig>(dir, FILES.tokenizerConfig);
    assert.equal(json.model.type, "WordLevel");
    assert.equal(json.model.unk_token, "<unk>");
    assert.deepEqual(
      json.added_tokens.map((a) => [a.id, a.content]),
      [
        [0, "<pad>"],
        [1, "<bos>"],
        [2, "<eos>"],
        [3, "<unk>"],
      ],
    );
    assert.deepEqual(
      [config.bos_token, config.eos_token, config.pad_token, config.unk_token, config.add_bos_token, config.add_eos_token],
      ["<bos>", "<eos>", "<pad>", "<unk>", true, false],
    );
    assert.deepEqual(buildWordLevel(trainTexts().flatMap((t) => [t.prompt, t.answer])), { json, config });
    assert.deepEqual(Object.keys(buildWordLevel(["b a b"]).json.model.vocab as object), ["<pad>", "<bos>", "<eos>", "<unk>", "b", "a"]);
  });
});

describe("loader", () => {
  test("reads every split; pixels are the composites, normalised", () => {
    const grids = readJson<Record<string, Composite>>(dir, FILES.grids);
    for (const [split, n] of [
      ["train", SMALL.train],
      ["val", SMALL.val],
      ["test", SMALL.test],
    ] as const) {
      const s = ds.splits[split]!;
      assert.equal(s.vqa.length, n);
      assert.equal(s.images.length, n * 56 * 56, "captions reuse the VQA images");
      const { pid, image, classes } = s.vqa[n - 1];
      assert.deepEqual(classes, grids[pid].classes);
      const px = renderComposite(itemPool(split === "train" ? trainMnist : testMnist, grids[pid].split), grids[pid]);
      for (let i = 0; i < px.length; i++) assert.ok(Math.abs(image[i] - (px[i] / 255 - PIXEL_MEAN) / PIXEL_STD) < 1e-5);
    }
    const cap = ds.splits.val!.captions[0];
    const same = ds.splits.val!.vqa.find((v) => ds.coco!.images[cap.imgid].cocoid === Number(v.pid))!;
    assert.equal(cap.image.byteOffset, same.image.byteOffset);
  });

  test("index without the optional files (real ScienceQA) and a clear error when problems are missing", async () => {
    const bare = join(root, "bare");
    mkdirSync(bare);
    writeFileSync(join(bare, FILES.problems), "{}");
    writeFileSync(join(bare, FILES.splits), JSON.stringify({ train: [], val: [], test: [] }));
    const index = await readIndex(bare);
    assert.equal(index.tokenizer, undefined);
    assert.equal(index.coco, undefined);
    await assert.rejects(readIndex(join(root, "nothing")), /cannot read .*problems\.json/);
  });
});

describe("batches", () => {
  const T = 40;
  let examples: EncodedExample[];
  before(() => {
    examples = ds.splits.train!.vqa.map((v) => ({ image: v.image, ...encodeText(tok, promptParts(v.problem)) }));
  });

  test("VQA batch: <bos> prompt answer, loss exactly on the answer + <eos>, prompt mask on the prompt", () => {
    const idx = [0, 1, 2, 3, 4];
    const b = lmBatch(tok, examples, idx, T);
    assert.equal(b.tokens.length, idx.length * T);
    assert.equal(b.image.length, idx.length * 56 * 56);
    idx.forEach((k, r) => {
      const e = examples[k];
      const row = <A extends Int32Array | Float32Array>(a: A) => Array.from(a.subarray(r * T, (r + 1) * T));
      const tokens = row(b.tokens);
      const targets = row(b.targets);
      const loss = row(b.lossMask);
      const prompt = row(b.promptMask);
      assert.equal(tokens[0], tok.special.bos);
      assert.deepEqual(
        targets.filter((_, i) => loss[i] === 1),
        [...e.answer, EOS],
      );
      assert.equal(tok.decode(targets.filter((_, i) => loss[i] === 1)), e.answer.length ? tok.decode(e.answer) : "");
      assert.match(tok.decode(targets.filter((_, i) => loss[i] === 1)), /^The answer is [A-D]\.$/);
      assert.deepEqual(
        tokens.filter((_, i) => prompt[i] === 1),
        e.prompt,
      );
      assert.equal(b.lengths[r], 1 + e.prompt.length + e.answer.length);
      assert.ok(tokens.slice(b.lengths[r]).every((t) => t === 0) && targets.slice(b.lengths[r]).every((t) => t === 0));
      for (let i = 0; i + 1 < b.lengths[r]; i++) assert.equal(targets[i], tokens[i + 1], "targets are the next token");
      assert.deepEqual(Array.from(b.image.subarray(r * 3136, (r + 1) * 3136)), Array.from(e.image));
    });
  });

  test("a sequence that does not fit T is an error, not a silent cut", () => {
    assert.throws(() => lmBatch(tok, examples, [0], 10), /prompt takes \d+ of T=10/);
    const n = 1 + examples[0].prompt.length + examples[0].answer.length;
    assert.throws(() => lmBatch(tok, examples, [0], n - 1), new RegExp(`raise T to at least ${n}`));
    assert.doesNotThrow(() => lmBatch(tok, examples, [0], n));
  });

  test("LM pre-training batch: every real target counts; ViT batch: quadrant labels", () => {
    const texts = ds.splits.train!.captions.map((c) => encodeText(tok, captionParts(c.captions[0])));
    const b = textBatch(tok, texts, [0, 1], T);
    for (let r = 0; r < 2; r++) {
      const loss = Array.from(b.lossMask.subarray(r * T, (r + 1) * T));
      assert.deepEqual(
        loss,
        Array.from({ length: T }, (_, i) => (i < b.lengths[r] ? 1 : 0)),
      );
    }
    const v = vitBatch(
      ds.splits.train!.vqa.map((x) => ({ image: x.image, classes: x.classes! })),
      [3, 1],
    );
    assert.deepEqual(Array.from(v.labels), [...ds.splits.train!.vqa[3].classes!, ...ds.splits.train!.vqa[1].classes!]);
  });

  test("epoch shuffler: batch k depends only on (seed, k); each epoch is a permutation", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 60 }), fc.integer({ min: 1, max: 8 }), fc.nat(1000), fc.nat(50), (n, bs, seed, step) => {
        fc.pre(n >= bs);
        const a = epochShuffler(n, bs, seed);
        const fresh = epochShuffler(n, bs, seed);
        assert.deepEqual(fresh.batchAt(step), a.batchAt(step));
        const epoch = Math.floor(step / a.stepsPerEpoch);
        const seen = Array.from({ length: a.stepsPerEpoch }, (_, k) => a.batchAt(epoch * a.stepsPerEpoch + k)).flat();
        assert.equal(new Set(seen).size, a.stepsPerEpoch * bs);
        assert.ok(seen.every((i) => i >= 0 && i < n));
      }),
      fcRuns(100),
    );
    const s = epochShuffler(100, 10, 0);
    assert.notDeepEqual(s.batchAt(0), s.batchAt(10), "epochs are reshuffled");
  });
});

describe("build", () => {
  test("a complete dataset with the same key is reused untouched", async () => {
    const before = statSync(join(dir, FILES.problems)).mtimeMs;
    const r = await buildDefaultData(dir, SMALL);
    assert.equal(r.reused, true);
    assert.equal(statSync(join(dir, FILES.problems)).mtimeMs, before);
  });

  test("same seed, same data; leftover temp dirs of dead builds are removed", async () => {
    const other = join(root, "again");
    const stale = `${other}.tmp-4194303`;
    mkdirSync(join(stale, "images"), { recursive: true });
    const r = await buildDefaultData(other, SMALL);
    assert.equal(r.reused, false);
    assert.ok(!existsSync(stale));
    for (const f of [FILES.problems, FILES.splits, FILES.captions, FILES.grids, FILES.tokenizer, FILES.tokenizerConfig])
      assert.equal(readFileSync(join(other, f), "utf8"), readFileSync(join(dir, f), "utf8"), f);
    assert.ok(readFileSync(join(other, "images/5/image.png")).equals(readFileSync(join(dir, "images/5/image.png"))));
  });

  test("an interrupted build leaves neither a half dataset nor its temp dir; a different key replaces the old one", async () => {
    const target = join(root, "interrupted");
    await assert.rejects(
      buildDefaultData(target, {
        ...SMALL,
        onProgress: (p) => {
          if (p.phase === "images" && p.done > 50) throw new Error("killed");
        },
      }),
      /killed/,
    );
    assert.ok(!existsSync(target));
    assert.ok(!existsSync(`${target}.tmp-${process.pid}`));

    const old = await buildDefaultData(target, { ...SMALL, train: 20, val: 8, test: 8 });
    assert.equal(old.reused, false);
    const r = await buildDefaultData(target, { ...SMALL, train: 24, val: 8, test: 8 });
    assert.equal(r.reused, false);
    assert.equal(readJson<Manifest>(target, FILES.manifest).key.train, 24);
    assert.equal(readJson<PidSplits>(target, FILES.splits).train.length, 24);
    assert.ok(!existsSync(`${target}.old-${process.pid}`));
  });
});

describe("grey PNG fast path", () => {
  test("decodes exactly what sharp decodes, for every row filter sharp writes; other PNGs are left to sharp", async () => {
    const { decodeGreyPng } = await import("../data/png-grey.ts");
    const sharp = (await import("sharp")).default;
    const w = 23;
    const h = 17;
    const src = Uint8Array.from({ length: w * h }, (_, i) => (i * 37 + ((i / w) | 0) * 11) & 0xff);
    for (const adaptiveFiltering of [false, true]) {
      const png = await sharp(src, { raw: { width: w, height: h, channels: 1 } })
        .toColourspace("b-w")
        .png({ adaptiveFiltering, compressionLevel: 9 })
        .toBuffer();
      const got = decodeGreyPng(png);
      assert.ok(got, "a grey 8-bit PNG takes the fast path");
      assert.deepEqual([got.width, got.height], [w, h]);
      assert.deepEqual([...got.pixels], [...src]);
    }
    const rgb = await sharp(src, { raw: { width: w, height: h, channels: 1 } })
      .png()
      .toBuffer();
    assert.equal(decodeGreyPng(rgb), undefined);
    assert.equal(decodeGreyPng(new Uint8Array(40)), undefined);
  });
});

describe("the language model's loss", () => {
  test("`solution_given = true`: the fine-tuning text of each problem, the solution moved into the prompt, the loss on the answer after it", () => {
    const tok = ds.tokenizer!;
    const format = promptFormat("QCM-EC");
    const given = solutionGivenTexts(tok, ds.splits.train!, format);
    assert.equal(given.length, ds.splits.train!.vqa.length);
    given.slice(0, 50).forEach((t, i) => {
      const p = ds.splits.train!.vqa[i].problem;
      const tuned = encodeText(tok, format.parts(p));
      // the same tokens as fine-tuning reads them, only the split moved
      assert.deepEqual([...t.prompt, ...t.answer], [...tuned.prompt, ...tuned.answer]);
      assert.equal(tok.decode(t.prompt.slice(tuned.prompt.length)).trim(), p.solution);
      assert.equal(tok.decode(t.answer).trim(), `The answer is ${p.choices[p.answer]}.`);
    });
    // a format without a solution adds nothing
    assert.equal(solutionGivenTexts(tok, ds.splits.train!, promptFormat("QCM-A")).length, 0);
  });

  test('`oversample = ["count" * k, …]`: each text of a listed type k times in the mix, every other text once, none dropped', () => {
    const tok = ds.tokenizer!;
    const format = promptFormat("QCM-EC");
    const texts = [...trainingTexts(tok, ds.splits.train!, format), ...solutionGivenTexts(tok, ds.splits.train!, format)];
    const captions = texts.filter((t) => t.category === undefined).length;
    assert.ok(captions > 0, "captions carry no question type");
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...QUESTION_TYPES), fc.integer({ min: 1, max: 5 })), (times) => {
        const mix = oversampled(texts, times);
        const seen = new Map<object, number>();
        for (const t of mix) seen.set(t, (seen.get(t) ?? 0) + 1);
        assert.equal(seen.size, texts.length);
        for (const t of texts) assert.equal(seen.get(t), (t.category && times[t.category]) || 1);
      }),
      fcRuns(20),
    );
    // the stage's batches draw from that mix
    const given = { task: "text" as const, batch: 4, seed: 0, loss: "answer" as const, solutionGiven: true };
    const withFormat = { ...ds, format };
    const plain = taskData(withFormat, given).examples;
    const counts = texts.filter((t) => t.category === "count").length;
    assert.ok(counts > 0);
    assert.equal(plain, texts.length);
    assert.equal(taskData(withFormat, { ...given, oversample: { count: 3 } }).examples, plain + 2 * counts);
  });

  test('`loss = "answer"` trains a text stage on each row\'s answer only, rows weighted equally', () => {
    const tok = ds.tokenizer!;
    const texts = ds.splits.train!.vqa.slice(0, 4).map((e) => encodeText(tok, promptParts(e.problem)));
    const T = 64;
    const all = textBatch(tok, texts, [0, 1, 2, 3], T);
    const answers = textBatch(tok, texts, [0, 1, 2, 3], T, false);
    texts.forEach((t, b) => {
      const row = (m: Float32Array) => Array.from(m.subarray(b * T, (b + 1) * T));
      assert.equal(
        row(all.lossMask).reduce((a, x) => a + x, 0),
        t.prompt.length + t.answer.length + 1,
        "every real target",
      );
      // position i predicts token i+1: the answer's first token is predicted from the prompt's last
      assert.deepEqual(
        row(answers.lossMask).flatMap((x, i) => (x ? [i] : [])),
        Array.from({ length: t.answer.length + 1 }, (_, k) => t.prompt.length + k),
      );
    });
  });
});
