import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { elaborate } from "../compiler/elaborate.ts";
import { DehvfError, type Diagnostic, renderAll, type SourceMap } from "../grammar/diagnostics.ts";
import { loadProgram, parseSource } from "../grammar/modules.ts";
import { SourceFile } from "../grammar/source.ts";
import { fcRuns } from "./fc-runs.ts";

/**
 * Random damage to the shipped models must end in a DehvfError with located
 * diagnostics (or, by luck, a valid model), never in another exception or a hang.
 */
/** `DEHVF_FUZZ_RUNS=5000` for a longer hunt; the default keeps the suite fast */
const RUNS = Number(process.env.DEHVF_FUZZ_RUNS ?? 150);
const MODELS = fileURLToPath(new URL("../models/", import.meta.url));
const STD = readdirSync(join(MODELS, "std"))
  .filter((f) => f.endsWith(".dehvf"))
  .sort();
const TINY = readFileSync(join(MODELS, "tiny-vqa.dehvf"), "utf8");
const STD_TEXTS = STD.map((f) => readFileSync(join(MODELS, "std", f), "utf8"));

// Mutants live in a temp dir with a copy of std/: tiny-vqa's `import "std/vit.dehvf"`
// and the std files' `import "nn.dehvf"` resolve next to them.
const TMP = mkdtempSync(join(tmpdir(), "dehvf-fuzz-"));
mkdirSync(join(TMP, "std"));
for (const f of STD) copyFileSync(join(MODELS, "std", f), join(TMP, "std", f));
after(() => rmSync(TMP, { recursive: true, force: true }));

const TOKENS = [
  ")",
  "(",
  "{",
  "}",
  "[",
  "]",
  "@",
  "=",
  ",",
  ":",
  ".",
  "...",
  "->",
  "^T",
  "-",
  "*",
  '"',
  "#",
  "\\",
  "$",
  "param",
  "forward",
  "block",
  "model",
  "site",
  "default",
  "repeat",
  "if",
  "then",
  "else",
  "return",
  "let",
  "tap",
  "fusion",
  "each",
  "target",
  "import",
  "frozen",
  "init",
  "\n",
];
const ident = fc.stringMatching(/^[a-z_][a-z0-9_]{0,6}$/);
const digit = fc.integer({ min: 0, max: 9 }).map(String);
const token = fc.oneof({ arbitrary: fc.constantFrom(...TOKENS), weight: 4 }, ident, digit);

type Mutation =
  | { kind: "delete"; at: number; len: number }
  | { kind: "duplicate"; at: number; len: number; to: number }
  | { kind: "insert"; at: number; token: string }
  | { kind: "swap"; i: number; j: number }
  | { kind: "truncate"; at: number };

const pos = fc.nat();
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("delete" as const), at: pos, len: fc.integer({ min: 1, max: 30 }) }),
  fc.record({ kind: fc.constant("duplicate" as const), at: pos, len: fc.integer({ min: 1, max: 30 }), to: pos }),
  fc.record({ kind: fc.constant("insert" as const), at: pos, token }),
  fc.record({ kind: fc.constant("swap" as const), i: pos, j: pos }),
  fc.record({ kind: fc.constant("truncate" as const), at: pos }),
);

/** words, numbers and single punctuation marks, with their offsets */
function lexish(text: string): { start: number; end: number }[] {
  return [...text.matchAll(/[A-Za-z_]\w*|\d+(?:\.\d+)?|\.\.\.|->|\^T|\S/g)].map((m) => ({ start: m.index, end: m.index + m[0].length }));
}

function mutate(text: string, m: Mutation): string {
  const n = text.length + 1;
  switch (m.kind) {
    case "delete": {
      const a = m.at % n;
      return text.slice(0, a) + text.slice(a + m.len);
    }
    case "duplicate": {
      const a = m.at % n;
      const span = text.slice(a, a + m.len);
      const to = m.to % n;
      return text.slice(0, to) + span + text.slice(to);
    }
    case "insert": {
      const a = m.at % n;
      return text.slice(0, a) + m.token + text.slice(a);
    }
    case "swap": {
      const toks = lexish(text);
      if (toks.length < 2) return text;
      const [x, y] = [toks[m.i % toks.length], toks[m.j % toks.length]].sort((p, q) => p.start - q.start);
      if (x.start === y.start) return text;
      return text.slice(0, x.start) + text.slice(y.start, y.end) + text.slice(x.end, y.start) + text.slice(x.start, x.end) + text.slice(y.end);
    }
    case "truncate":
      return text.slice(0, m.at % n);
  }
}

function assertLocated(diags: readonly Diagnostic[], sources: SourceMap | undefined): void {
  assert.ok(diags.length >= 1, "a DehvfError without diagnostics");
  for (const d of diags) {
    if (!d.span) continue;
    const src = sources?.get(d.span.file);
    assert.ok(src, `no source for ${d.span.file}: ${d.message}`);
    assert.ok(
      0 <= d.span.start && d.span.start <= d.span.end && d.span.end <= src.text.length,
      `span ${d.span.start}..${d.span.end} outside ${d.span.file} (${src.text.length} chars): ${d.message}`,
    );
  }
}

/** Loads and elaborates `text` as a file at `path`; only DehvfError may escape, and it is checked. */
function compileMutant(text: string, path: string): void {
  writeFileSync(path, text);
  try {
    elaborate(loadProgram(path));
  } catch (e) {
    if (!(e instanceof DehvfError)) assert.fail(`threw ${(e as Error)?.stack ?? String(e)}\n--- mutated text:\n${text}`);
    assertLocated(e.diagnostics, e.sources);
    assert.match(e.render(), /^error\[\w+\]: /);
  }
}

describe("parser fuzz", () => {
  test("mutated models compile or fail with located diagnostics", { timeout: 120_000 * Math.max(1, RUNS / 150) }, () => {
    const base = fc.oneof(
      { arbitrary: fc.constant({ text: TINY, path: join(TMP, "fuzz-tiny.dehvf") }), weight: 4 },
      { arbitrary: fc.constantFrom(...STD_TEXTS).map((text) => ({ text, path: join(TMP, "std", "fuzz-std.dehvf") })), weight: 1 },
    );
    fc.assert(
      fc.property(base, fc.array(mutation, { minLength: 1, maxLength: 3 }), ({ text, path }, muts) => {
        compileMutant(muts.reduce(mutate, text), path);
      }),
      { ...fcRuns(RUNS), includeErrorInReport: true },
    );
  });

  test("syntax diagnostics of any text render without crashing", () => {
    const soup = fc.array(token, { maxLength: 40 }).map((ts) => ts.join(" "));
    const mutant = fc.tuple(fc.constantFrom(TINY, ...STD_TEXTS), fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([t, ms]) => ms.reduce(mutate, t));
    const text = fc.oneof(soup, fc.string({ maxLength: 80 }), fc.string({ unit: "binary", maxLength: 40 }), mutant);
    fc.assert(
      fc.property(text, (t) => {
        const src = new SourceFile("fuzz.dehvf", t);
        const sources = new Map([[src.path, src]]);
        const { diagnostics } = parseSource(src);
        if (!diagnostics.length) return;
        assertLocated(diagnostics, sources);
        const out = renderAll(diagnostics, sources);
        assert.equal(out.match(/^error\[syntax\]: /gm)?.length, diagnostics.length);
        assert.equal(out.match(/--> fuzz\.dehvf:\d+:\d+$/gm)?.length, diagnostics.filter((d) => d.span).length);
      }),
      { ...fcRuns(RUNS * 4), includeErrorInReport: true },
    );
  });
});
