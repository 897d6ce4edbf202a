import { seededRng } from "../util/rng.ts";
import { composeClasses, type Look, pick, QUADRANTS, randomLook, shuffle, type Composite, type ItemPool, type Quad } from "./composites.ts";
import { describeKinds, describeQuadrant } from "./captions.ts";
import { CLASS_GROUP, CLASS_NOUNS, GROUPS, type Group } from "./fashion-mnist.ts";

export type SplitName = "train" | "val" | "test";
export const SPLITS: readonly SplitName[] = ["train", "val", "test"];

/** One entry of ScienceQA's problems.json, field for field. */
export interface Problem {
  question: string;
  choices: string[];
  answer: number;
  hint: string;
  image: string | null;
  task: string;
  subject: string;
  topic: string;
  category: string;
  skill: string;
  grade: string;
  lecture: string;
  solution: string;
  split: SplitName;
}

export type Problems = Record<string, Problem>;
export type PidSplits = Record<SplitName, string[]>;

/**
 * Stored in `category`, so accuracy can be reported per type as ScienceQA reports it per
 * category. The first four ask what the items are (semantic: a classifier's deep layers
 * keep it); the last two how one is drawn (low-level: a classifier learns to ignore it).
 */
export const QUESTION_TYPES = ["presence", "count", "position-coarse", "position-fine", "brightness", "size"] as const;
export const LOW_LEVEL_TYPES: readonly QuestionType[] = ["brightness", "size"];
export type QuestionType = (typeof QUESTION_TYPES)[number];

export const LETTERS = "ABCDEFGHIJ";

export interface TextParts {
  prompt: string;
  answer: string;
}

/** ScienceQA's options line: `(A) yes (B) no`. */
export function optionsText(p: Pick<Problem, "choices">): string {
  return p.choices.map((c, i) => `(${LETTERS[i]}) ${c}`).join(" ");
}

/** ScienceQA's QCM→A text: `Question: … Options: (A) … Answer:` then `The answer is X.` (the Context line only when there is a hint). */
export function promptParts(p: Problem): TextParts {
  const options = optionsText(p);
  const context = p.hint ? ` Context: ${p.hint}` : "";
  return { prompt: `Question: ${p.question}${context} Options: ${options} Answer:`, answer: `The answer is ${LETTERS[p.answer]}.` };
}

/**
 * Draws each value equally often (a shuffled deck, reshuffled when empty): plain random draws
 * would leave small splits visibly unbalanced, and a constant answer is learnable without looking.
 */
function deck<T>(rand: () => number, values: readonly T[]): () => T {
  let cards: T[] = [];
  return () => {
    if (cards.length === 0) cards = shuffle(rand, [...values]);
    return cards.pop() as T;
  };
}

const ALL_CLASSES = Array.from({ length: 10 }, (_, c) => c);
const classesIn = (g: Group) => ALL_CLASSES.filter((c) => CLASS_GROUP[c] === g);
const classesOutside = (g: Group) => ALL_CLASSES.filter((c) => CLASS_GROUP[c] !== g);

export const PRESENCE_QUESTION: Record<Group, string> = {
  top: "Is there a top in the picture?",
  trousers: "Are there trousers in the picture?",
  dress: "Is there a dress in the picture?",
  footwear: "Is there footwear in the picture?",
  bag: "Is there a bag in the picture?",
};

export const COUNT_QUESTION: Record<Group, string> = {
  top: "How many tops are in the picture?",
  trousers: "How many pairs of trousers are in the picture?",
  dress: "How many dresses are in the picture?",
  footwear: "How many shoes are in the picture?",
  bag: "How many bags are in the picture?",
};

interface Plan {
  type: QuestionType;
  /** the quadrant the question asks about, if one */
  quadrant?: number;
  question: string;
  classes: Quad<number>;
  correct: string;
  distractors: string[];
  /** set where the question asks about a look; else drawn at random */
  looks?: Quad<Look>;
}

/** Fills `cells` with classes of group g and the rest with classes outside it, so the asked fact holds exactly. */
function cellsWith(rand: () => number, g: Group, cells: number[]): Quad<number> {
  return [0, 1, 2, 3].map((q) => pick(rand, cells.includes(q) ? classesIn(g) : classesOutside(g))) as Quad<number>;
}

function randomClasses(rand: () => number): Quad<number> {
  return [0, 1, 2, 3].map(() => pick(rand, ALL_CLASSES)) as Quad<number>;
}

function planner(rand: () => number): (type: QuestionType) => Plan {
  const groupDeck = deck(rand, GROUPS);
  const yesDeck = deck(rand, [true, false]);
  const countDeck = deck(rand, [0, 1, 2, 3, 4]);
  const quadDeck = deck(rand, [0, 1, 2, 3]);
  const classDeck = deck(rand, ALL_CLASSES);
  const quadrants = () => shuffle(rand, [0, 1, 2, 3]);

  // each type its own decks: a shared one would balance answers over all types, not per type
  const [brightDeck, largeDeck] = [deck(rand, [true, false]), deck(rand, [true, false])];
  const [brightQuads, sizeQuads] = [deck(rand, [0, 1, 2, 3]), deck(rand, [0, 1, 2, 3])];
  const looksWith = (q: number, look: Partial<Look>): Quad<Look> => [0, 1, 2, 3].map((k) => ({ ...randomLook(rand), ...(k === q ? look : {}) })) as Quad<Look>;
  // a low-level question about the item in quadrant q: its look `key` is `on` (words: [on, off])
  const lookQuestion = (type: QuestionType, q: number, key: "bright" | "large", on: boolean, [yes, no]: [string, string]): Plan => ({
    type,
    quadrant: q,
    question: `Is the item in the ${QUADRANTS[q]} ${yes} or ${no}?`,
    classes: randomClasses(rand),
    looks: looksWith(q, { [key]: on }),
    correct: on ? yes : no,
    distractors: [on ? no : yes],
  });

  return (type) => {
    switch (type) {
      case "brightness":
        return lookQuestion("brightness", brightQuads(), "bright", brightDeck(), ["bright", "dim"]);
      case "size":
        return lookQuestion("size", sizeQuads(), "large", largeDeck(), ["large", "small"]);
      case "presence": {
        const g = groupDeck();
        const yes = yesDeck();
        const cells = yes ? quadrants().slice(0, 1 + Math.floor(rand() * 2)) : [];
        return { type, question: PRESENCE_QUESTION[g], classes: cellsWith(rand, g, cells), correct: yes ? "yes" : "no", distractors: [yes ? "no" : "yes"] };
      }
      case "count": {
        const g = groupDeck();
        const n = countDeck();
        const others = shuffle(
          rand,
          [0, 1, 2, 3, 4].filter((k) => k !== n),
        ).slice(0, 3);
        return { type, question: COUNT_QUESTION[g], classes: cellsWith(rand, g, quadrants().slice(0, n)), correct: String(n), distractors: others.map(String) };
      }
      case "position-coarse": {
        const q = quadDeck();
        const g = groupDeck();
        const classes = randomClasses(rand);
        classes[q] = pick(rand, classesIn(g));
        const others = shuffle(
          rand,
          GROUPS.filter((x) => x !== g),
        ).slice(0, 3);
        return { type, quadrant: q, question: `What kind of item is in the ${QUADRANTS[q]}?`, classes, correct: g, distractors: others };
      }
      case "position-fine": {
        const q = quadDeck();
        const c = classDeck();
        const classes = randomClasses(rand);
        classes[q] = c;
        // Tops and footwear are offered against their own look-alikes: the question is only hard if the choices are.
        const g = CLASS_GROUP[c];
        const rivals =
          g === "top" || g === "footwear"
            ? classesIn(g).filter((x) => x !== c)
            : shuffle(
                rand,
                ALL_CLASSES.filter((x) => x !== c),
              ).slice(0, 3);
        return {
          type,
          quadrant: q,
          question: `What is in the ${QUADRANTS[q]}?`,
          classes,
          correct: CLASS_NOUNS[c],
          distractors: rivals.map((x) => CLASS_NOUNS[x]),
        };
      }
    }
  };
}

/** The canonical position of an option: yes/no, then numbers, coarse groups, fine classes. */
function optionRank(option: string): number {
  const ranked: readonly string[] = ["yes", "no", "0", "1", "2", "3", "4", ...GROUPS, ...CLASS_NOUNS, "bright", "dim", "large", "small"];
  const at = ranked.indexOf(option);
  if (at < 0) throw new Error(`internal: option "${option}" has no canonical position`);
  return at;
}

export interface GeneratedProblem {
  problem: Problem;
  composite: Composite;
}

/**
 * `count` problems, question types in equal shares, each image made to fit its question
 * (so "no" is as common as "yes" and every count occurs), from the items of `pool` only.
 */
export function generateProblems(pool: ItemPool, count: number, split: SplitName, seed: number): GeneratedProblem[] {
  const rand = seededRng(seed, `scienceqa:${split}`);
  const plan = planner(rand);
  const out: GeneratedProblem[] = [];
  for (let i = 0; i < count; i++) {
    const p = plan(QUESTION_TYPES[i % QUESTION_TYPES.length]);
    // Options come in one fixed order per question type (yes before no, numbers ascending,
    // items in class order), not shuffled as in ScienceQA: binding a shuffled option to its
    // letter is reading comprehension a 7B LLM brings but a 4-layer toy LM cannot learn in
    // minutes, and the question here is what the vision fusion contributes.
    const choices = [p.correct, ...p.distractors].sort((a, b) => optionRank(a) - optionRank(b));
    const answer = choices.indexOf(p.correct);
    const composite = composeClasses(pool, p.classes, rand, p.looks);
    out.push({
      composite,
      problem: {
        question: p.question,
        choices,
        answer,
        hint: "",
        image: "image.png",
        task: "closed choice",
        subject: "visual recognition",
        topic: "fashion",
        category: p.type,
        skill: LOW_LEVEL_TYPES.includes(p.type) ? "low-level" : p.type === "position-fine" ? "fine-grained" : "coarse",
        grade: "grade1",
        lecture: "",
        // ScienceQA's explanation field: what the picture shows where the question looks (formats "-EA", "-EC" answer with it)
        solution: p.quadrant === undefined ? describeKinds(p.classes) : `${describeQuadrant(p.classes, p.quadrant, composite.looks)}.`,
        split,
      },
    });
  }
  return out;
}
