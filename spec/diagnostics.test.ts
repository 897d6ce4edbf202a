import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { isAbsolute, join, relative, resolve } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { elaborate } from "../compiler/elaborate.ts";
import { DehvfError, didYouMean, editDistance, nearestName } from "../grammar/diagnostics.ts";
import { loadProgram } from "../grammar/modules.ts";

/**
 * Every file directly in spec/fixtures/bad/ is a malformed model whose first line is
 * `# expect: <text the rendered error must contain>`; an optional second line
 * `# diagnostics: N+` asks for at least N diagnostics (syntax recovery). Files in
 * subfolders are helpers (e.g. the other half of an import cycle), not entries.
 */
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BAD = join(ROOT, "spec/fixtures/bad");
const fixtures = readdirSync(BAD, { withFileTypes: true })
  .filter((e) => e.isFile() && e.name.endsWith(".dehvf"))
  .map((e) => e.name)
  .sort();

interface Expectation {
  readonly text: string;
  readonly minDiagnostics: number;
}

function expectation(file: string): Expectation {
  const lines = readFileSync(join(BAD, file), "utf8").split("\n");
  const m = /^# expect: (.+)$/.exec(lines[0]);
  assert.ok(m, `${file}: first line must be \`# expect: <substring>\``);
  const n = /^# diagnostics: (\d+)\+$/.exec(lines[1] ?? "");
  return { text: m[1].trim(), minDiagnostics: n ? Number(n[1]) : 1 };
}

/** Runs the whole front end in-process; returns the DehvfError it must throw. */
function compileError(path: string): DehvfError {
  let caught: unknown;
  try {
    elaborate(loadProgram(path));
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, `${path} compiled without error`);
  if (!(caught instanceof DehvfError)) assert.fail(`${path} threw ${(caught as Error)?.stack ?? String(caught)} instead of a DehvfError`);
  return caught;
}

/** Checks every `--> file:line:col` in rendered text names a real file and a position inside it. */
function assertLocations(rendered: string, cwd: string): number {
  const locs = [...rendered.matchAll(/--> (.+):(\d+):(\d+)$/gm)];
  for (const [whole, file, line, col] of locs) {
    const abs = isAbsolute(file) ? file : resolve(cwd, file);
    assert.ok(existsSync(abs), `${whole}: no such file`);
    const lines = readFileSync(abs, "utf8").split("\n");
    const l = Number(line);
    assert.ok(l >= 1 && l <= lines.length, `${whole}: line out of range (file has ${lines.length})`);
    assert.ok(Number(col) >= 1 && Number(col) <= lines[l - 1].length + 1, `${whole}: column out of range`);
  }
  return locs.length;
}

describe("bad fixtures", () => {
  test("there are at least 20 entry fixtures", () => {
    assert.ok(fixtures.length >= 20, `only ${fixtures.length} fixtures`);
  });

  for (const file of fixtures) {
    test(file, () => {
      const exp = expectation(file);
      const err = compileError(join(BAD, file));
      assert.ok(err.diagnostics.length >= exp.minDiagnostics, `${err.diagnostics.length} diagnostic(s), expected at least ${exp.minDiagnostics}`);
      for (const d of err.diagnostics) {
        assert.ok(d.span, `diagnostic without a location: ${d.message}`);
        const src = err.sources?.get(d.span.file);
        assert.ok(src, `no source text for ${d.span.file}`);
        assert.ok(d.span.start >= 0 && d.span.start <= d.span.end && d.span.end <= src.text.length, `span out of bounds: ${JSON.stringify(d.span)}`);
      }
      const rendered = err.render();
      assert.ok(assertLocations(rendered, process.cwd()) >= err.diagnostics.length, `every diagnostic should have a --> location:\n${rendered}`);
      assert.match(rendered, /^\s*\|\s*\^+\s*$/m, `no caret line:\n${rendered}`);
      assert.ok(rendered.includes(exp.text), `expected ${JSON.stringify(exp.text)} in:\n${rendered}`);
    });
  }
});

describe("dehvf check (CLI)", () => {
  const cli = join(ROOT, "bin/dehvf.js");
  for (const file of ["syntax-several-errors.dehvf", "shape-forward-arg.dehvf", "import-cycle.dehvf"]) {
    test(file, () => {
      const rel = relative(ROOT, join(BAD, file));
      const r = spawnSync(process.execPath, [cli, "check", rel], { cwd: ROOT, encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 1, `exit ${r.status}; stderr:\n${r.stderr}`);
      assert.match(r.stderr, /--> spec\/fixtures\/bad\/[\w/-]+\.dehvf:\d+:\d+$/m, `no location in:\n${r.stderr}`);
      assert.ok(assertLocations(r.stderr, ROOT) >= 1);
      assert.ok(r.stderr.includes(expectation(file).text), r.stderr);
      assert.doesNotMatch(r.stderr, /^ {4}at /m, "stack trace in stderr");
      assert.doesNotMatch(r.stderr, /internal error/);
    });
  }
});

describe("editDistance", () => {
  test("known values", () => {
    assert.equal(editDistance("kitten", "sitting"), 3);
    assert.equal(editDistance("", "abc"), 3);
    assert.equal(editDistance("abc", ""), 3);
    assert.equal(editDistance("layers", "layers"), 0);
    assert.equal(editDistance("layrs", "layers"), 1);
    // no transpositions: a swap costs two substitutions
    assert.equal(editDistance("Lniear", "Linear"), 2);
  });

  const word = fc.string({ maxLength: 12 });
  test("is a metric bounded by the lengths", () => {
    fc.assert(
      fc.property(word, word, word, (a, b, c) => {
        const d = editDistance(a, b);
        assert.equal(d, editDistance(b, a));
        assert.equal(d === 0, a === b);
        assert.ok(d >= Math.abs(a.length - b.length) && d <= Math.max(a.length, b.length));
        assert.ok(editDistance(a, c) <= d + editDistance(b, c));
      }),
    );
  });
});

describe("nearestName", () => {
  test("suggests close names only", () => {
    assert.equal(nearestName("layrs", ["norm", "layers", "embed"]), "layers");
    assert.equal(nearestName("Lniear", ["LayerNorm", "Linear", "MLP"]), "Linear");
    assert.equal(nearestName("memroy", ["memory", "prefix"]), "memory");
    assert.equal(nearestName("x", ["y"]), "y");
    assert.equal(nearestName("abc", ["xyz"]), undefined);
    assert.equal(nearestName("layers", []), undefined);
  });

  test("ignores exact matches, compares case-insensitively, prefers the first of equals", () => {
    assert.equal(nearestName("fc", ["fc"]), undefined);
    assert.equal(nearestName("linear", ["Linear"]), "Linear");
    assert.equal(nearestName("ab", ["ac", "ad"]), "ac");
    assert.equal(nearestName("dmodel", ["d_model", "model"]), "d_model");
  });

  test("allows about a third of the name's length in edits", () => {
    assert.equal(nearestName("abcdef", ["abXYef"]), "abXYef");
    assert.equal(nearestName("abcdef", ["aXYZef"]), undefined);
  });

  test("the suggestion is a candidate within the allowed distance", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 10 }), fc.array(fc.string({ maxLength: 10 }), { maxLength: 8 }), (name, cands) => {
        const n = nearestName(name, cands);
        if (n === undefined) return;
        assert.ok(cands.includes(n) && n !== name);
        assert.ok(editDistance(name.toLowerCase(), n.toLowerCase()) <= Math.max(1, Math.floor(name.length / 3)));
      }),
    );
  });

  test("didYouMean wraps the suggestion", () => {
    assert.equal(didYouMean("layrs", ["layers"]), "did you mean `layers`?");
    assert.equal(didYouMean("zzz", ["layers"]), undefined);
  });
});
