import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { bleu, captionMetrics, ciderD, multipleChoiceAccuracy, tokenize, type CaptionExample } from "../eval/metrics.ts";
import { fcRuns } from "./fc-runs.ts";

const close = (a: number, b: number, tol = 1e-9, msg?: string) => assert.ok(Math.abs(a - b) <= tol, msg ?? `${a} vs ${b}`);
// pycocoevalcap's smoothing constants, used in the hand computations below.
const TINY = 1e-15;
const SMALL = 1e-9;

describe("tokenize", () => {
  test("lowercases and splits on whitespace and punctuation", () => {
    assert.deepEqual(tokenize("A man, riding a HORSE... on the beach!"), ["a", "man", "riding", "a", "horse", "on", "the", "beach"]);
    assert.deepEqual(tokenize("Don't wear a t-shirt (3.5 kg, 1,000 times)"), ["don't", "wear", "a", "t-shirt", "3.5", "kg", "1,000", "times"]);
    assert.deepEqual(tokenize("  \t\n"), []);
  });
});

describe("BLEU (coco-caption)", () => {
  test("a candidate equal to a reference scores 1 at every order", () => {
    const r = bleu({ img: { candidates: "a dog runs on the grass", references: ["A dog runs on the grass.", "a brown dog outside"] } });
    for (const b of r.bleu) close(b, 1, 1e-8);
  });

  test("no 4-gram overlap: hand-computed precisions, BLEU-4 ≈ 0", () => {
    // cand a b c x a b c / ref a b c y a b c, both 7 tokens.
    // p1 = 6/7 (x unmatched), p2 = 4/6 (ab ab bc bc), p3 = 2/5 (abc abc), p4 = 0/4.
    const r = bleu({ 1: { candidates: "a b c x a b c", references: ["a b c y a b c"] } });
    const p = [(6 + TINY) / (7 + SMALL), (4 + TINY) / (6 + SMALL), (2 + TINY) / (5 + SMALL), TINY / (4 + SMALL)];
    // Equal lengths still give ratio (7+TINY)/(7+SMALL) < 1, so the toolkit applies a ~1e-10 penalty.
    const bp = Math.exp(1 - (7 + SMALL) / (7 + TINY));
    assert.ok(bp < 1 && bp > 1 - 1e-9);
    close(r.bleu[0], bp * p[0], 1e-15);
    close(r.bleu[1], bp * Math.sqrt(p[0] * p[1]), 1e-15);
    close(r.bleu[2], bp * Math.cbrt(p[0] * p[1] * p[2]), 1e-15);
    close(r.bleu[3], bp * (p[0] * p[1] * p[2] * p[3]) ** 0.25, 1e-18);
    assert.ok(r.bleu[3] < 1e-3);
  });

  test("brevity penalty with the closest reference length (and the toolkit's short-candidate quirk)", () => {
    // 3 tokens against refs of 5 and 8: closest is 5, BP = exp(1 - 5/3).
    const r = bleu({ x: { candidates: "a b c", references: ["a b c d e", "a b c d e f g h"] } });
    assert.equal(r.refLength, 5);
    const bp = Math.exp(1 - (5 + SMALL) / (3 + TINY));
    close(r.bleu[0], bp);
    close(r.bleu[1], bp);
    close(r.bleu[2], bp);
    // No 4-grams in a 3-token candidate: guess = 0, so p4 = TINY/SMALL = 1e-6, not 0 — as in coco-caption.
    const p = [(3 + TINY) / (3 + SMALL), (2 + TINY) / (2 + SMALL), (1 + TINY) / (1 + SMALL), TINY / SMALL];
    close(r.bleu[3], bp * (p[0] * p[1] * p[2] * p[3]) ** 0.25, 1e-15);
    close(r.bleu[3], bp * 10 ** -1.5, 1e-10);
  });

  test("closest-length ties go to the shorter reference", () => {
    // 4 tokens, refs of 3 and 5: the tie picks 3, so there is no brevity penalty.
    const r = bleu({ x: { candidates: "a b c d", references: ["a b c", "a b c d e"] } });
    assert.equal(r.refLength, 3);
    close(r.bleu[0], 1, 1e-8);
  });

  test("corpus BLEU pools counts over images rather than averaging per-image scores", () => {
    const r = bleu({
      good: { candidates: "a b c d", references: ["a b c d"] },
      bad: { candidates: "w x", references: ["y z"] },
    });
    close(r.bleu[0], (4 + TINY) / (6 + SMALL));
    close(r.perImage.get("good")![0], 1, 1e-8);
    assert.ok(r.perImage.get("bad")![0] < 1e-6);
  });
});

describe("CIDEr-D (pycocoevalcap)", () => {
  test("hand-computed: two images, one reference each", () => {
    // N = 2 images, idf = ln 2 for every n-gram (each appears in one image's references).
    // A: "a b" vs "a b": unigram and bigram cosines are 1, 3/4-grams empty → mean 2/4, ×10 = 5.
    // B: "c" vs "c d": unigram cosine ln2² / (ln2 · √2 ln2) = 1/√2; no hypothesis bigrams → 0;
    //    lengths (bigram counts, as in the toolkit) 0 vs 1 → penalty e^(-1/72). Score 10 · (1/√2 · e^(-1/72)) / 4.
    const r = ciderD({ A: { candidates: "a b", references: ["a b"] }, B: { candidates: "c", references: ["c d"] } });
    const b = (10 * (Math.SQRT1_2 * Math.exp(-1 / 72))) / 4;
    close(r.perImage.get("A")!, 5);
    close(r.perImage.get("B")!, b);
    close(r.cider, (5 + b) / 2);
  });

  test("hand-computed: a word in every image's references carries no weight", () => {
    // df(x) = 2 = N → idf(x) = 0. A: "x y" vs "x y": the y and "x y" terms match → 5.
    // B: "x" vs "x z": the hypothesis vector is all zero → 0.
    const r = ciderD({ A: { candidates: "x y", references: ["x y"] }, B: { candidates: "x", references: ["x z"] } });
    close(r.perImage.get("A")!, 5);
    close(r.perImage.get("B")!, 0);
    close(r.cider, 2.5);
  });

  const corpus: Record<string, CaptionExample> = {
    1: {
      candidates: "",
      references: ["a man riding a wave on top of a surfboard", "a surfer rides a large wave in the ocean", "a person on a surfboard riding a wave"],
    },
    2: {
      candidates: "",
      references: ["two dogs playing with a frisbee in a park", "a pair of dogs run across the grass", "dogs chase a frisbee on a green lawn"],
    },
    3: {
      candidates: "",
      references: ["a plate of food with broccoli and rice", "a dinner plate topped with rice and vegetables", "food on a white plate with broccoli"],
    },
    4: { candidates: "", references: ["a red double decker bus on a city street", "a bus driving down a busy road", "a large red bus parked near a sidewalk"] },
  };
  const withCandidates = (pick: (refs: readonly string[], id: string) => string) =>
    Object.fromEntries(Object.entries(corpus).map(([id, ex]) => [id, { candidates: pick(ex.references, id), references: ex.references }]));

  test("a candidate copied from the references scores high; an unrelated one scores 0", () => {
    const good = ciderD(withCandidates((refs) => refs[0]));
    const bad = ciderD(withCandidates(() => "purple elephants juggling quietly"));
    assert.ok(good.cider > 2, `good ${good.cider}`);
    assert.equal(bad.cider, 0);
    // Swapping captions between images must hurt.
    const swapped = ciderD(withCandidates((_refs, id) => corpus[String((Number(id) % 4) + 1)].references[0]));
    assert.ok(swapped.cider < good.cider / 4, `swapped ${swapped.cider}`);
  });

  test("captionMetrics bundles BLEU-1..4 and CIDEr-D", () => {
    const m = captionMetrics(withCandidates((refs) => refs[1]));
    assert.deepEqual(Object.keys(m), ["bleu1", "bleu2", "bleu3", "bleu4", "ciderD"]);
    assert.ok(m.bleu1 > 0.99 && m.ciderD > 2);
  });
});

describe("caption metric properties", () => {
  const word = fc.constantFrom("a", "the", "dog", "cat", "runs", "on", "grass", "red", "bus", "of");
  const sentence = fc.array(word, { maxLength: 9 }).map((ws) => ws.join(" "));
  const example = fc.record({ candidates: sentence, references: fc.array(sentence, { minLength: 1, maxLength: 5 }) });
  const corpusArb = fc.array(example, { minLength: 1, maxLength: 6 });
  const toCorpus = (xs: CaptionExample[]) => new Map(xs.map((x, i) => [`img${i}`, x]));

  test("scores stay in range", () => {
    fc.assert(
      fc.property(corpusArb, (xs) => {
        const c = toCorpus(xs);
        for (const b of bleu(c).bleu) assert.ok(b >= 0 && b <= 1 + 1e-12, `bleu ${b}`);
        const { cider, perImage } = ciderD(c);
        for (const s of perImage.values()) assert.ok(s >= 0 && s <= 10 + 1e-9, `cider ${s}`);
        assert.ok(Number.isFinite(cider));
      }),
      fcRuns(200),
    );
  });

  test("reference order and image order do not matter", () => {
    fc.assert(
      fc.property(corpusArb, fc.infiniteStream(fc.nat()), (xs, rnd) => {
        const shuffle = <T>(a: readonly T[]) => {
          const b = [...a];
          for (let i = b.length - 1; i > 0; i--) {
            const j = rnd.next().value % (i + 1);
            [b[i], b[j]] = [b[j], b[i]];
          }
          return b;
        };
        const a = toCorpus(xs);
        const b = new Map(shuffle([...a.entries()]).map(([id, ex]) => [id, { candidates: ex.candidates, references: shuffle(ex.references) }]));
        bleu(a).bleu.forEach((v, k) => close(v, bleu(b).bleu[k], 1e-12));
        close(ciderD(a).cider, ciderD(b).cider, 1e-9);
      }),
      fcRuns(200),
    );
  });

  test("a candidate that is one of its references (4+ words) gets BLEU 1 without a brevity penalty", () => {
    fc.assert(
      fc.property(fc.array(word, { minLength: 4, maxLength: 9 }), fc.array(sentence, { maxLength: 3 }), (ws, others) => {
        const s = ws.join(" ");
        for (const b of bleu({ x: { candidates: s, references: [...others, s] } }).bleu) close(b, 1, 1e-8);
      }),
      fcRuns(100),
    );
  });
});

describe("multiple-choice accuracy", () => {
  test("per category, overall (micro) and macro", () => {
    const r = multipleChoiceAccuracy([
      { category: "color", correct: true },
      { category: "color", correct: false },
      { category: "count", correct: true },
      { category: "color", correct: true },
    ]);
    assert.deepEqual(r.overall, { correct: 3, total: 4, accuracy: 0.75 });
    assert.deepEqual(r.perCategory, { color: { correct: 2, total: 3, accuracy: 2 / 3 }, count: { correct: 1, total: 1, accuracy: 1 } });
    close(r.macro, (2 / 3 + 1) / 2);
    const empty = multipleChoiceAccuracy([]);
    assert.equal(empty.overall.total, 0);
    assert.ok(Number.isNaN(empty.overall.accuracy) && Number.isNaN(empty.macro));
  });
});
