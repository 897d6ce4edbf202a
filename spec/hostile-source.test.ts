import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { type CompiledModel, elaborate } from "../compiler/elaborate.ts";
import { DehvfError } from "../grammar/diagnostics.ts";
import { MAX_ERRORS, MAX_EVAL_DEPTH, MAX_EXPR_NESTING, MAX_INSTANCES, MAX_REPEAT, MAX_SOURCE_BYTES, MAX_SOURCE_TOKENS } from "../grammar/limits.ts";
import { loadProgram } from "../grammar/modules.ts";
import { fcRuns } from "./fc-runs.ts";

/**
 * Model files are input: a generated or hostile one (absurd nesting, counts, sizes,
 * encodings, not a file at all) must end in a located DehvfError or compile, quickly,
 * never in a stack overflow, a hang or escape sequences on the user's terminal.
 */
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "bin/dehvf.js");
const TMP = mkdtempSync(join(tmpdir(), "dehvf-hostile-"));
after(() => rmSync(TMP, { recursive: true, force: true }));

let files = 0;
function write(text: string | Uint8Array, name = `m${files++}.dehvf`): string {
  const path = join(TMP, name);
  writeFileSync(path, text);
  return path;
}

/** Loads and elaborates `path`: a model, or a DehvfError whose spans all lie in their files; nothing else may escape. */
function compile(path: string): CompiledModel | DehvfError {
  try {
    return elaborate(loadProgram(path));
  } catch (e) {
    if (!(e instanceof DehvfError)) return assert.fail(`threw ${(e as Error)?.stack ?? String(e)} instead of a DehvfError`);
    for (const d of e.diagnostics) {
      if (!d.span) continue;
      const src = e.sources?.get(d.span.file);
      assert.ok(src && 0 <= d.span.start && d.span.start <= d.span.end && d.span.end <= src.text.length, `span outside its file: ${d.message}`);
    }
    assert.match(e.render(), /^error\[\w+\]: /);
    return e;
  }
}

function expectModel(text: string): CompiledModel {
  const r = compile(write(text));
  if (r instanceof DehvfError) assert.fail(`expected a model, got:\n${r.render()}`);
  return r;
}

/** The DehvfError `source` (text, or the path of something to load) gives, with a diagnostic matching `message` at `at`. */
function expectError(source: string | { path: string }, message: RegExp, at?: { line: number; col: number }): DehvfError {
  const r = compile(typeof source === "string" ? write(source) : source.path);
  if (!(r instanceof DehvfError)) return assert.fail(`compiled, expected an error matching ${message}`);
  const d = r.diagnostics.find((x) => message.test(x.message));
  assert.ok(d, `no diagnostic matching ${message} in:\n${r.render()}`);
  if (at) {
    assert.ok(d.span, `${d.message}: no location`);
    assert.deepEqual(r.sources!.get(d.span.file)!.position(d.span.start), at, d.message);
  }
  return r;
}

const FORWARD = "  forward(x: [N, d]) -> [N, d] = ";
/** A model whose block's forward is `body`, on line 3 from column BODY_COL. */
const withBody = (body: string) =>
  `block B(d: int = 4) {\n  param w: [d, d]\n${FORWARD}${body}\n}\nmodel M {\n  b = B()\n  forward(x: [N, 4]) -> [N, 4] = b(x)\n}\n`;
const BODY_COL = FORWARD.length + 1;
/** `block B(d: int = 4) {`, `param w: [d, d]` and the forward's head */
const TOKENS_BEFORE_BODY = 10 + 8 + 17;
const sum = (terms: number, term = "x") => Array.from({ length: terms }, () => term).join(" + ");

/** Ways to nest an expression `k` levels deep. */
const NESTINGS: Record<string, (k: number) => string> = {
  parentheses: (k) => `${"(".repeat(k)}x${")".repeat(k)}`,
  calls: (k) => `${"relu(".repeat(k)}x${")".repeat(k)}`,
  "list brackets": (k) => `${"[".repeat(k)}x${"]".repeat(k)}`,
  indexing: (k) => `${"x[".repeat(k)}0${"]".repeat(k)}`,
  "unary minus": (k) => `${"-".repeat(k)}x`,
  not: (k) => `${"not ".repeat(k)}x`,
  transposes: (k) => `x${"^T".repeat(k)}`,
  members: (k) => `b${".out".repeat(k)}`,
  "if chains": (k) => `${"if true then ".repeat(k)}x${" else x".repeat(k)}`,
  sites: (k) => `${"site s() default ".repeat(k)}x`,
};

const NESTED_TOO_DEEP = new RegExp(`^expression nested deeper than ${MAX_EXPR_NESTING} levels$`);

describe("deep nesting", () => {
  for (const [kind, nest] of Object.entries(NESTINGS))
    test(`10,000 levels of ${kind}: a located error`, () => {
      expectError(withBody(nest(10_000)), NESTED_TOO_DEEP);
    });

  test("the error points at the first token past the limit", () => {
    expectError(withBody(NESTINGS.parentheses(10_000)), NESTED_TOO_DEEP, { line: 3, col: BODY_COL + MAX_EXPR_NESTING });
    expectError(withBody(NESTINGS["unary minus"](10_000)), NESTED_TOO_DEEP, { line: 3, col: BODY_COL + MAX_EXPR_NESTING });
  });

  test("nesting just inside the limit compiles", () => {
    expectModel(withBody(NESTINGS.parentheses(MAX_EXPR_NESTING - 1)));
    expectModel(withBody(NESTINGS.calls((MAX_EXPR_NESTING - 1) >> 1)));
    expectError(withBody(NESTINGS.parentheses(MAX_EXPR_NESTING)), NESTED_TOO_DEEP);
  });

  test("100,000 levels: a nesting error, or the token limit first", () => {
    expectError(withBody(NESTINGS["unary minus"](100_000)), NESTED_TOO_DEEP);
    expectError(withBody(NESTINGS.parentheses(100_000)), new RegExp(`^file has more than ${MAX_SOURCE_TOKENS} tokens$`), {
      line: 3,
      col: BODY_COL + MAX_SOURCE_TOKENS - TOKENS_BEFORE_BODY,
    });
  });

  test("blocks calling blocks add up their expressions' nesting to a located limit", () => {
    // 97 nested blocks, each wrapping its child's call in 30 calls: ~3,000 levels of evaluation
    const text = `block R(n: int, d: int = 4) {\n  inner = R(n: n - 1) if n > 0\n  forward(x: [N, d]) -> [N, d] = if n > 0 then ${"relu(".repeat(30)}inner(x)${")".repeat(30)} else x\n}\nmodel M {\n  r = R(n: 97)\n  forward(x: [N, 4]) -> [N, 4] = r(x)\n}\n`;
    expectError(text, new RegExp(`nest deeper than ${MAX_EVAL_DEPTH} levels`));
  });
});

describe("long chains", () => {
  test("a 4,000-term sum compiles to a chain of adds", () => {
    const m = expectModel(withBody(sum(4000)));
    assert.equal(m.outputs[0].node.op, "add");
  });

  test("a 40,000-term sum compiles", () => {
    expectModel(withBody(sum(40_000)));
  });

  test("a wrong last term of a 4,000-term sum is a located shape error", () => {
    const body = `${sum(3999)} + x[:, 0:3]`;
    expectError(withBody(body), /^shapes \[N, 4\] and \[N, 3\] do not broadcast/, { line: 3, col: BODY_COL });
  });

  test("4,000 `and`s and a mixed chain evaluate", () => {
    expectModel(withBody(`if ${sum(4000, "true").replaceAll("+", "and")} then x else x`));
    expectModel(withBody(Array.from({ length: 4000 }, (_, i) => ["x @ w", "x * 2", "x - x", "relu(x)"][i % 4]).join(" + ")));
  });

  test("a chain of 2,000 files importing each other loads", () => {
    const dir = join(TMP, "chain");
    mkdirSync(dir);
    const n = 2000;
    for (let i = 0; i < n; i++) {
      const next = i + 1 < n ? `import "f${i + 1}.dehvf"\n` : "";
      const model = i === 0 ? `model M {\n  b = B${n - 1}()\n  forward(x: [N, 4]) -> [N, 4] = b(x)\n}\n` : "";
      writeFileSync(join(dir, `f${i}.dehvf`), `${next}block B${i}(d: int = 4) {\n  forward(x: [N, d]) -> [N, d] = x\n}\n${model}`);
    }
    const r = compile(join(dir, "f0.dehvf"));
    assert.ok(!(r instanceof DehvfError), r instanceof DehvfError ? r.render() : "");
  });
});

describe("absurd counts and sizes", () => {
  const repeated = (count: string) =>
    `block L(d: int) {\n  param w: [d, d]\n  forward(x: [N, d]) -> [N, d] = x @ w\n}\nmodel M {\n  layer = repeat(${count}) L(4)\n  forward(x: [N, 4]) -> [N, 4] = layer(x)\n}\n`;

  test("repeat(1000000) names the limit, at the count", () => {
    expectError(repeated("1000000"), new RegExp(`^repeat count is 1000000; at most ${MAX_REPEAT} copies are allowed$`), { line: 6, col: 18 });
  });

  test(`repeat(${MAX_REPEAT}) is allowed`, () => {
    assert.equal(expectModel(repeated(String(MAX_REPEAT))).params.length, MAX_REPEAT);
  });

  test("repeats inside repeats stop at the instance limit", () => {
    const text = `block L(d: int) {\n  param w: [d, d]\n}\nblock G(d: int) {\n  layer = repeat(${MAX_REPEAT}) L(d)\n}\nmodel M {\n  g = repeat(${MAX_REPEAT}) G(4)\n  forward(x: [N, 4]) -> [N, 4] = x\n}\n`;
    expectError(text, new RegExp(`^the model has more than ${MAX_INSTANCES} block instances$`), { line: 5, col: 3 });
  });

  const params = (shapes: string[]) => `model M {\n${shapes.map((s, i) => `  param p${i}: [${s}]\n`).join("")}  forward(x: [N, 4]) -> [N, 4] = x\n}\n`;

  test("a parameter of 10^22 elements is refused at its shape", () => {
    expectError(
      params(["100000000000, 100000000000"]),
      /^parameter `p0` of shape \[100000000000, 100000000000\] has 1\.00e\+22 elements; at most 9007199254740991 \(2\^53 - 1\) can be counted exactly$/,
      { line: 2, col: 14 },
    );
  });

  test("parameters adding up past 2^53 are refused at the one that crosses", () => {
    expectModel(params(["9007199254740991"]));
    expectError(
      params(["4503599627370496", "4503599627370496"]),
      /^the model's parameters add up to more than 9007199254740991 \(2\^53 - 1\) elements at `p1`/,
      { line: 3, col: 14 },
    );
  });

  test("integer literals past 2^53 are refused, not rounded", () => {
    expectError(params(["9007199254740993"]), /^integer 9007199254740993 is larger than 9007199254740991/, { line: 2, col: 14 });
    expectError(params([`1${"0".repeat(400)}`]), /^integer 10+…0+ is larger than/);
  });

  test("int arithmetic past 2^53 is refused; floats stay floats", () => {
    expectError(params(["4294967296 * 4294967296"]), /^4294967296 \* 4294967296 is beyond 9007199254740991/, { line: 2, col: 14 });
    expectModel(withBody("x * 1e300 * 1e-300"));
  });
});

describe("files that are not model files", () => {
  const NOT_A_MODEL = /is (a directory|a character device|a named pipe), not a model file$/;

  test("a directory", () => {
    const e = expectError({ path: TMP }, NOT_A_MODEL);
    assert.ok(e.diagnostics[0].message.includes(TMP));
  });

  test("/dev/zero", { skip: !existsSync("/dev/zero") }, () => {
    expectError({ path: "/dev/zero" }, /^\/dev\/zero is a character device, not a model file$/);
  });

  test("a named pipe, without waiting for a writer", (t) => {
    const fifo = join(TMP, "pipe.dehvf");
    if (spawnSync("mkfifo", [fifo]).status !== 0) return t.skip("no mkfifo here");
    expectError({ path: fifo }, /is a named pipe, not a model file$/);
  });

  test("a file over the size limit, without reading it", () => {
    const big = write("");
    truncateSync(big, 64 * MAX_SOURCE_BYTES); // sparse: nothing is written, and nothing must be read
    expectError({ path: big }, /is 67,108,864 bytes; model files may be at most 1 MiB$/);
  });

  test("a missing file", () => {
    expectError({ path: join(TMP, "nothing.dehvf") }, /^no such file: /);
  });

  test("imports of each, located at the import", () => {
    const big = write("");
    truncateSync(big, MAX_SOURCE_BYTES + 1);
    const text = `import "${TMP}"\nimport "/dev/zero"\nimport "${big}"\nmodel M {\n  forward(x: [N]) = x\n}\n`;
    expectError(text, /is a directory, not a model file$/, { line: 1, col: 1 });
    expectError(text, /^\/dev\/zero is a character device/, { line: 2, col: 1 });
    expectError(text, /model files may be at most 1 MiB$/, { line: 3, col: 1 });
  });
});

describe("honest diagnostics", () => {
  const UNKNOWN_Y = /^unknown name `y`$/;
  const lines = (e: DehvfError) => e.render().split("\n");

  test("a UTF-8 BOM is ignored and columns stay right", () => {
    const e = expectError("\uFEFFmodel M {\n  forward(x: [N]) = y\n}\n", UNKNOWN_Y, { line: 2, col: 21 });
    assert.ok(!e.render().includes("feff"));
    expectModel("\uFEFFmodel M {\n  forward(x: [N]) = x\n}\n");
    expectError("model M {\n  forward(x: [N]) = x \uFEFF\n}\n", /^unexpected character/, { line: 2, col: 23 });
  });

  test("CR-only, CRLF and LF line endings lex and number lines alike", () => {
    for (const eol of ["\r", "\r\n", "\n"]) {
      const e = expectError(["# comment", "model M {", "  # another", "  forward(x: [N]) = y", "}", ""].join(eol), UNKNOWN_Y, { line: 4, col: 21 });
      assert.ok(lines(e).includes("4 |   forward(x: [N]) = y"), e.render());
    }
  });

  test("control bytes are shown escaped, with the caret on the escape", () => {
    const e = expectError("model M {\n  forward(x: [N]) = x + \x1b[31mred\x07 # \x1b]0;title\x07\n}\n", /^unexpected character `\x1b`$/, { line: 2, col: 25 });
    const out = e.render();
    assert.doesNotMatch(out, /[\x00-\x08\x0b-\x1f\x7f-\x9f]/);
    const src = lines(e).find((l) => l.startsWith("2 | "))!;
    const marker = lines(e)[lines(e).indexOf(src) + 1];
    assert.equal(marker.indexOf("^"), src.indexOf("\\x1b"));
    assert.match(marker, /\| +\^{4}$/);
  });

  test("control bytes quoted in messages are escaped", () => {
    const e = expectError('model M {\n  forward(x: [N]) = x "\x1b[2J\x00"\n}\n', /`"\x1b\[2J\x00"`/);
    assert.doesNotMatch(e.render(), /[\x00-\x08\x0b-\x1f\x7f-\x9f]/);
    assert.match(e.render(), /\\x1b\[2J\\x00/);
  });

  test("a 100 KB line is cut to a window around the caret", () => {
    const body = `${sum(12_500)} + y + ${sum(12_500)}`;
    const e = expectError(withBody(body), UNKNOWN_Y, { line: 3, col: BODY_COL + body.indexOf("y") });
    const src = lines(e).find((l) => l.startsWith("3 | "))!;
    const marker = lines(e)[lines(e).indexOf(src) + 1];
    assert.ok(src.length < 200, `shown line is ${src.length} characters`);
    assert.match(src, /^3 \| ….* y .*…$/);
    assert.equal(src[marker.indexOf("^")], "y");
  });

  test("tabs before the caret stay tabs under it", () => {
    const e = expectError("model M {\n\tforward(x: [N]) =\t\ty\n}\n", UNKNOWN_Y);
    assert.ok(lines(e).includes(`  | \t${" ".repeat("forward(x: [N]) =".length)}\t\t^`), e.render());
  });

  test("garbage stops after a bounded number of syntax errors", () => {
    const e = expectError(withBody("x x ".repeat(40_000)), new RegExp(`^stopped after ${MAX_ERRORS} syntax errors$`));
    assert.ok(e.diagnostics.length <= MAX_ERRORS + 2);
    const random = fc.sample(fc.uint8Array({ minLength: 200_000, maxLength: 200_000 }), { seed: 1, numRuns: 1 })[0];
    compile(write(random));
  });

  test("thousands of unknown names stop at a bounded number of link errors", () => {
    const lets = Array.from({ length: 20_000 }, (_, i) => `    let a${i} = x\n`).join("");
    const uses = Array.from({ length: 20_000 }, (_, i) => `    let c${i} = b${i}\n`).join("");
    const e = expectError(`model M {\n  forward(x: [N]) {\n${lets}${uses}    return x\n  }\n}\n`, /^unknown name `b0`$/);
    assert.equal(e.diagnostics.length, MAX_ERRORS);
  });

  test("megabyte names get no suggestion and a shortened message", () => {
    const name = "a".repeat(100_000);
    const e = expectError(`model M {\n  forward(x: [N]) {\n    let ${name} = x\n    return ${name}b\n  }\n}\n`, /^unknown name/);
    assert.ok(e.render().length < 2000);
  });
});

describe("the command line", () => {
  /** `dehvf check` on `path`: exit status and stderr, which must hold no internal error or stack trace. */
  function check(path: string): { status: number | null; stderr: string } {
    const r = spawnSync(process.execPath, [BIN, "check", path], { encoding: "utf8", timeout: 60_000 });
    assert.ok(!r.stderr.includes("internal error"), r.stderr);
    assert.doesNotMatch(r.stderr, /^\s+at .+:\d+:\d+\)?$/m, "a stack trace");
    return { status: r.status, stderr: r.stderr };
  }

  const cases: [string, () => string, RegExp][] = [
    [
      "10,000 nested parentheses",
      () => write(withBody(NESTINGS.parentheses(10_000))),
      /^error\[syntax\]: expression nested deeper than \d+ levels\n --> .+:3:\d+$/m,
    ],
    ["a 4,000-term sum with a bad last term", () => write(withBody(`${sum(3999)} + x[:, 0:3]`)), /error\[shape\]/],
    [
      "repeat(1000000)",
      () => write(`model M {\n  layer = repeat(1000000) M2()\n  forward(x: [N]) = x\n}\nblock M2 {\n  forward(x: [N]) = x\n}\n`),
      /at most 4096 copies/,
    ],
    ["an integer past 2^53", () => write(`model M {\n  param w: [9007199254740993]\n  forward(x: [N]) = x\n}\n`), /larger than 9007199254740991/],
    ["a directory", () => TMP, /is a directory, not a model file/],
    ["/dev/zero", () => "/dev/zero", /is a character device, not a model file/],
    [
      "a file over the size limit",
      () => {
        const big = write("");
        truncateSync(big, 32 * MAX_SOURCE_BYTES);
        return big;
      },
      /model files may be at most 1 MiB/,
    ],
  ];
  for (const [what, path, message] of cases)
    test(`${what}: exit 1 with a located error`, () => {
      const r = check(path());
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr.split("\n")[0], /^error\[\w+\]: /);
      assert.match(r.stderr, message);
    });

  test("a 4,000-term sum checks", () => {
    const r = check(write(withBody(sum(4000))));
    assert.equal(r.status, 0, r.stderr);
  });

  test("a 4,000-term sum plans (an inline tree gets a buffer every so often) and runs in the interpreter", () => {
    const file = write(withBody(sum(4000)));
    for (const args of [
      ["compile", file, "--emit", "plan", "--dim", "N=2"],
      ["run", file, "--backend", "interp", "--dim", "N=2"],
    ]) {
      const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 0, `${args.join(" ")}: ${r.stderr}`);
    }
  });
});

describe("property", () => {
  test("random nestings of long sums compile, or stop at the nesting limit with a located error", () => {
    // Each wrapper keeps the value an [N, 4] tensor and opens one or two levels of nesting.
    const wrap: Record<string, (e: string) => string> = {
      paren: (e) => `(${e})`,
      relu: (e) => `relu(${e})`,
      neg: (e) => `-(${e})`,
      scale: (e) => `(${e}) * 0.5`,
      matmul: (e) => `(${e}) @ w`,
      if: (e) => `if true then ${e} else x`,
      list: (e) => `[${e}][0]`,
      slice: (e) => `(${e})[:, 0:4]`,
      transpose: (e) => `(${e})^T^T`,
    };
    const wrappers = fc.array(fc.constantFrom(...Object.keys(wrap)), { maxLength: 2 * MAX_EXPR_NESTING, size: "max" });
    fc.assert(
      fc.property(wrappers, fc.integer({ min: 1, max: 5000 }), (kinds, terms) => {
        const r = compile(write(withBody(kinds.reduce((e, k) => wrap[k](e), sum(terms))), "property.dehvf"));
        const levels = { atMost: 2 * kinds.length + 1, atLeast: kinds.length + 1 };
        if (r instanceof DehvfError) {
          assert.match(r.diagnostics[0].message, NESTED_TOO_DEEP);
          assert.ok(levels.atMost > MAX_EXPR_NESTING, `refused ${levels.atMost} levels`);
        } else assert.ok(levels.atLeast <= MAX_EXPR_NESTING, `accepted ${levels.atLeast} levels`);
      }),
      { ...fcRuns(25), includeErrorInReport: true },
    );
  });
});
