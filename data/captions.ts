import { type Look, pick, QUADRANTS, shuffle, type Quad } from "./composites.ts";
import { CLASS_GROUP, CLASS_NOUNS, CLASS_PLURALS, GROUPS, type Group } from "./fashion-mnist.ts";
import type { SplitName, TextParts } from "./scienceqa.ts";

/** Karpathy's dataset_coco.json, the fields its loaders read. */
export interface CocoSentence {
  raw: string;
  tokens: string[];
  imgid: number;
  sentid: number;
}

export interface CocoImage {
  /** Karpathy's COCO file has it (train2014/val2014); Flickr30k's does not */
  filepath?: string;
  filename: string;
  imgid: number;
  split: SplitName;
  sentences: CocoSentence[];
  cocoid: number;
}

export interface CocoDataset {
  dataset: string;
  images: CocoImage[];
}

export const CAPTIONS_PER_IMAGE = 5;

/** Captioning is trained as the answer to a fixed prompt, so one LM batch layout serves both tasks. */
export const CAPTION_PROMPT = "Describe the picture.";

export function captionParts(raw: string): TextParts {
  return { prompt: CAPTION_PROMPT, answer: raw };
}

const NUMBER_WORDS = ["no", "one", "two", "three", "four"];

const a = (c: number) => (c === 1 ? "a pair of trousers" : `${/^[aeiou]/.test(CLASS_NOUNS[c]) ? "an" : "a"} ${CLASS_NOUNS[c]}`);

const GROUP_NOUN: Record<Group, [string, string]> = {
  top: ["top", "tops"],
  trousers: ["pair of trousers", "pairs of trousers"],
  dress: ["dress", "dresses"],
  footwear: ["shoe", "shoes"],
  bag: ["bag", "bags"],
};

function list(xs: string[]): string {
  return xs.length === 1 ? xs[0] : `${xs.slice(0, -1).join(", ")} and ${xs[xs.length - 1]}`;
}

/** "two sneakers, a bag": counts of each distinct key in first-seen order. */
function counted<K>(keys: K[], one: (k: K) => string, many: (k: K) => string): string[] {
  return [...new Set(keys)].map((k) => {
    const n = keys.filter((x) => x === k).length;
    return n === 1 ? one(k) : `${NUMBER_WORDS[n]} ${many(k)}`;
  });
}

/** "a small dim t-shirt": an item with how it is drawn. */
const looking = (c: number, l: Look) => `a ${l.large ? "large" : "small"} ${l.bright ? "bright" : "dim"} ${c === 1 ? "pair of trousers" : CLASS_NOUNS[c]}`;

/**
 * "top left a t-shirt, top right a bag, …": the picture in words (also the context the LM
 * pre-trains with); with `looks`, each item's size and brightness too.
 */
export function describePositions(classes: Quad<number>, looks?: Quad<Look>): string {
  return list(QUADRANTS.map((_, q) => describeQuadrant(classes, q, looks)));
}

/**
 * "top-left a small dim t-shirt": one quadrant of describePositions, word for word (also the
 * solution of a question about that quadrant, so an answer can restate what the context says).
 */
export function describeQuadrant(classes: Quad<number>, q: number, looks?: Quad<Look>): string {
  // the quadrants named as the questions name them ("top-left"), so a question's words match its context's
  return `${QUADRANTS[q]} ${looks ? looking(classes[q], looks[q]) : a(classes[q])}`;
}

/**
 * "top, footwear, top and bag.": the kind of item in each quadrant, in reading order (the
 * solution of a question about the whole picture: presence and counts can be read off it).
 */
export function describeKinds(classes: Quad<number>): string {
  return `${list(classes.map((c) => CLASS_GROUP[c]))}.`;
}

/** Five phrasings of the same picture: reading order, coarse counts, positions, fine counts, rows. */
export function captionsFor(classes: Quad<number>, rand: () => number): string[] {
  const [tl, tr, bl, br] = classes;
  const plural = (c: number) => (c === 1 ? GROUP_NOUN.trousers[1] : CLASS_PLURALS[c]);
  const groups = classes.map((c) => CLASS_GROUP[c]);
  const coarseOrder = [...groups].sort((x, y) => GROUPS.indexOf(x) - GROUPS.indexOf(y));
  return [
    list(classes.map(a)),
    list(
      counted(
        rand() < 0.5 ? groups : coarseOrder,
        (g) => `a ${GROUP_NOUN[g][0]}`,
        (g) => GROUP_NOUN[g][1],
      ),
    ),
    describePositions(classes),
    `${pick(rand, ["a picture of", "an image with", "four items:"])} ${list(counted(shuffle(rand, [...classes]), a, plural))}`,
    `${a(tl)} next to ${a(tr)}, with ${a(bl)} and ${a(br)} below`,
  ];
}

/** Karpathy's tokens: lowercase words, punctuation dropped. */
export function cocoTokens(raw: string): string[] {
  return raw.toLowerCase().match(/[a-z0-9]+(?:-[a-z0-9]+)*/g) ?? [];
}

export function cocoImage(fields: Omit<CocoImage, "sentences">, captions: string[], firstSentid: number): CocoImage {
  const sentences = captions.map((raw, k) => ({ raw, tokens: cocoTokens(raw), imgid: fields.imgid, sentid: firstSentid + k }));
  return { ...fields, sentences };
}
