import { QUADRANTS } from "./composites.ts";
import { CLASS_GROUP, CLASS_NOUNS, GROUPS, type Group } from "./fashion-mnist.ts";
import { COUNT_QUESTION, PRESENCE_QUESTION, type Problem } from "./scienceqa.ts";

const askedGroup = (table: Record<Group, string>, question: string): Group | undefined => GROUPS.find((g) => table[g] === question);
const askedQuadrant = (question: string): number => QUADRANTS.findIndex((q) => question.endsWith(` the ${q}?`));

/**
 * The option a semantic question of the built-in set has when each quadrant holds the class
 * its scores rank first (`scores[q]`: one score per class; a fine question takes the best of
 * the offered classes). It is how far a classifier's own reading of the items carries: the
 * ViT pre-training reports it per question type, a ceiling the fusions can be held against.
 * Undefined for questions it cannot read off item classes (brightness, size) or does not
 * know (any other dataset's).
 */
export function answerFromItems(p: Pick<Problem, "question" | "category" | "choices">, scores: readonly ArrayLike<number>[]): string | undefined {
  const best = (q: number, among: readonly number[]) => among.reduce((a, c) => (scores[q][c] > scores[q][a] ? c : a), among[0]);
  const allClasses = CLASS_NOUNS.map((_, c) => c);
  const group = (q: number) => CLASS_GROUP[best(q, allClasses)];
  switch (p.category) {
    case "presence":
    case "count": {
      const g = askedGroup(p.category === "presence" ? PRESENCE_QUESTION : COUNT_QUESTION, p.question);
      if (g === undefined) return undefined;
      const n = [0, 1, 2, 3].filter((q) => group(q) === g).length;
      return p.category === "presence" ? (n > 0 ? "yes" : "no") : String(n);
    }
    case "position-coarse":
    case "position-fine": {
      const q = askedQuadrant(p.question);
      if (q < 0) return undefined;
      if (p.category === "position-coarse") return group(q);
      const offered = p.choices.map((c) => CLASS_NOUNS.indexOf(c as (typeof CLASS_NOUNS)[number]));
      return offered.includes(-1) ? undefined : CLASS_NOUNS[best(q, offered)];
    }
    default:
      return undefined;
  }
}
