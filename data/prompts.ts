import { LETTERS, optionsText as options, type Problem, promptParts, type TextParts } from "./scienceqa.ts";

/**
 * How a multiple-choice problem becomes training text and how a generated answer is read
 * back: a train section's `prompt` (and `answer`). Training, evaluation and the stage's
 * identity all use the same one.
 */
export interface PromptFormat {
  /** as the train section names it: "QCM-A", or the templates */
  readonly name: string;
  /** the prompt and the answer (the correct choice) */
  parts(p: Problem): TextParts;
  /** the answer text for choice `i` */
  answer(p: Problem, i: number): string;
  /** the answer text up to and including what names choice `i` (decoding may stop there), or undefined when the whole answer is needed */
  answerUpToChoice(p: Problem, i: number): string | undefined;
  /** the choice a generated answer names, or undefined */
  choiceOf(p: Problem, generated: string): number | undefined;
}

export const DEFAULT_PROMPT = "QCM-A";
export const DEFAULT_ANSWER = "The answer is {letter}.";
export const PROMPT_PLACEHOLDERS = ["question", "context", "options"] as const;
export const ANSWER_PLACEHOLDERS = ["letter", "choice", "solution"] as const;

/**
 * ScienceQA's input formats (Q question, C context, M options); the context line is left
 * out when a problem has no hint. Answered `The answer is X.` with the option's letter
 * ("-A", ScienceQA's) or with the option itself ("-C": `The answer is dim.`, which a model
 * can read off a description without binding options to letters). "-EA" and "-EC" give the
 * problem's solution first, as ScienceQA's "-EA" (chain of thought): a small LM restates the
 * fact its answer needs, then copies from the words just before the choice.
 */
const INPUTS: Record<string, (p: Problem) => string> = {
  QCM: (p) => promptParts(p).prompt,
  CQM: (p) => `${p.hint ? `Context: ${p.hint} ` : ""}Question: ${p.question} Options: ${options(p)} Answer:`,
  QM: (p) => `Question: ${p.question} Options: ${options(p)} Answer:`,
};
const ANSWERS: Record<string, string> = {
  A: DEFAULT_ANSWER,
  C: "The answer is {choice}.",
  EA: "{solution} The answer is {letter}.",
  EC: "{solution} The answer is {choice}.",
};
export const PROMPT_NAMES = Object.keys(INPUTS).flatMap((i) => Object.keys(ANSWERS).map((a) => `${i}-${a}`));
const namedFormat = (name: string): { input: (p: Problem) => string; answer: string } | undefined => {
  const [input, answer] = name.split("-");
  return PROMPT_NAMES.includes(name) ? { input: INPUTS[input], answer: ANSWERS[answer] } : undefined;
};

const PLACEHOLDER = /\{([A-Za-z_]*)\}/g;
const squeeze = (s: string) => s.replace(/\s+/g, " ").trim();
const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The placeholder names in `template`, in order. */
function placeholders(template: string): string[] {
  return [...template.matchAll(PLACEHOLDER)].map((m) => m[1]);
}

/** Why `prompt` / `answer` are not a usable format (and which of the two is at fault), or undefined. */
export function promptProblem(prompt: string, answer: string | undefined): { key: "prompt" | "answer"; message: string } | undefined {
  const p = (message: string) => ({ key: "prompt" as const, message });
  const a = (message: string) => ({ key: "answer" as const, message });
  const named = !prompt.includes("{");
  if (named) {
    if (!namedFormat(prompt))
      return p(
        `unknown prompt format "${prompt}": use one of ${PROMPT_NAMES.map((n) => `"${n}"`).join(", ")}, or a template with ${PROMPT_PLACEHOLDERS.map((x) => `{${x}}`).join(", ")}`,
      );
    if (answer !== undefined) return a(`\`answer\` goes with a template \`prompt\`; a named format says its answer ("-A": the letter, "-C": the option)`);
    return undefined;
  }
  const bad = placeholders(prompt).filter((x) => !(PROMPT_PLACEHOLDERS as readonly string[]).includes(x));
  if (bad.length) return p(`unknown placeholder {${bad[0]}} in \`prompt\` (placeholders: ${PROMPT_PLACEHOLDERS.map((x) => `{${x}}`).join(", ")})`);
  if (!placeholders(prompt).includes("question")) return p("the `prompt` template needs {question}");
  const inAnswer = placeholders(answer ?? DEFAULT_ANSWER);
  const badA = inAnswer.filter((x) => !(ANSWER_PLACEHOLDERS as readonly string[]).includes(x));
  if (badA.length) return a(`unknown placeholder {${badA[0]}} in \`answer\` (placeholders: {letter} or {choice}, and {solution} before it)`);
  const choices = inAnswer.filter((x) => x !== "solution");
  if (choices.length !== 1) return a("the `answer` template needs exactly one {letter} or {choice}");
  if (inAnswer.filter((x) => x === "solution").length > 1 || inAnswer.indexOf("solution") > inAnswer.indexOf(choices[0]))
    return a("{solution} may come once in the `answer` template, before the {letter} or {choice}");
  return undefined;
}

/** The format a train section's `prompt` and `answer` name (checked by train/stages.ts; throws on a bad one). */
export function promptFormat(prompt: string = DEFAULT_PROMPT, answer?: string): PromptFormat {
  const problem = promptProblem(prompt, answer);
  if (problem) throw new Error(problem.message);
  const named = namedFormat(prompt);
  const render = (p: Problem): string =>
    named ? named.input(p) : squeeze(prompt.replace(PLACEHOLDER, (_, k: string) => (k === "question" ? p.question : k === "context" ? p.hint : options(p))));
  const answerTemplate = named?.answer ?? answer ?? DEFAULT_ANSWER;
  const byLetter = answerTemplate.includes("{letter}");
  const [before, after] = answerTemplate.split(byLetter ? "{letter}" : "{choice}");
  const choiceText = (p: Problem, i: number) => (byLetter ? LETTERS[i] : p.choices[i]);
  const withSolution = (text: string, p: Problem) => text.replace("{solution}", p.solution);
  const answerFor = (p: Problem, i: number) => squeeze(`${withSolution(before, p)}${choiceText(p, i)}${after}`);
  // the text between the solution and the choice, whitespace-insensitive and found anywhere in what was generated
  const lead = squeeze(before.split("{solution}").at(-1)!);
  const leadRe = lead ? `${lead.split(" ").map(escapeRegExp).join("\\s+")}\\s*` : "^\\s*";
  const letterRe = new RegExp(`${leadRe}\\(?([A-${LETTERS[LETTERS.length - 1]}])\\b`, "i");
  const leadOnly = new RegExp(leadRe, "i");
  return {
    name: named ? prompt : JSON.stringify({ prompt, answer: answerTemplate }),
    parts: (p) => ({ prompt: render(p), answer: answerFor(p, p.answer) }),
    answer: answerFor,
    answerUpToChoice: (p, i) => (byLetter ? squeeze(`${withSolution(before, p)}${LETTERS[i]}`) : undefined),
    choiceOf(p, generated) {
      if (byLetter) {
        const m = letterRe.exec(generated);
        if (!m) return undefined;
        const i = LETTERS.indexOf(m[1].toUpperCase());
        return i >= 0 && i < p.choices.length ? i : undefined;
      }
      const m = leadOnly.exec(generated);
      if (!m) return undefined;
      const rest = generated.slice(m.index + m[0].length).toLowerCase();
      // the longest choice the text starts with ("shirt" must not win over "t-shirt" … nor "4" over "40")
      let best: number | undefined;
      p.choices.forEach((c, i) => {
        if (rest.startsWith(c.toLowerCase()) && (best === undefined || c.length > p.choices[best].length)) best = i;
      });
      return best;
    },
  };
}
