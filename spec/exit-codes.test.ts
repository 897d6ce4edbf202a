import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { totalmem, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { InvalidArgumentError } from "commander";
import fc from "fast-check";
import { report } from "../bin/report.ts";
import { dimAssignment, nonNegativeInt, positiveInt } from "../bin/commands/load.ts";
import { elaborate } from "../compiler/elaborate.ts";
import { buildDefaultData } from "../data/build.ts";
import { type LoadedDataset, loadDataset } from "../data/loader.ts";
import { DehvfError } from "../grammar/diagnostics.ts";
import { loadProgram } from "../grammar/modules.ts";
import { describeSystemError, withPath } from "../io/errno.ts";
import { SafetensorsError } from "../io/safetensors.ts";
import { NoAdapterError } from "../runtime/device.ts";
import { stagesFor, trainStages } from "../train/stages.ts";
import { checkTaskFits } from "../train/task-fit.ts";
import { fcRuns } from "./fc-runs.ts";

/*
 * Exit 1 is for what the user or the machine can fix, with what and where; exit 2 only
 * for bugs. Each case runs the real CLI on small models and tiny files (no GPU work: the
 * refusals come before anything compiles).
 */

const MICRO = "spec/fixtures/train/micro.dehvf";

/**
 * Vulkan finds no driver: no WebGPU adapter, so plans use WebGPU's default limits (128 MiB a
 * binding) whatever GPU this machine has, and sizes refused here are refused everywhere.
 */
const NO_GPU = { VK_ICD_FILENAMES: "/nonexistent", VK_DRIVER_FILES: "/nonexistent" };

function dehvf(args: string[], env: Record<string, string> = {}): { code: number; err: string } {
  const r = spawnSync(process.execPath, ["bin/dehvf.js", ...args], { encoding: "utf8", timeout: 120_000, env: { ...process.env, ...env } });
  return { code: r.status ?? -1, err: r.stderr };
}

/** Exit 1, a message matching every pattern, no "internal error" and no JavaScript stack trace. */
function assertUserError(r: { code: number; err: string }, ...patterns: RegExp[]): void {
  assert.equal(r.code, 1, r.err);
  for (const p of patterns) assert.match(r.err, p);
  assert.doesNotMatch(r.err, /internal error|this is a bug/);
  // Dawn's own warnings print native frames (`at CheckVkSuccessImpl (…/VulkanError.cpp:106)`); JS frames end in :line:col
  assert.doesNotMatch(r.err, /\n\s+at .*:\d+:\d+\)?\n/);
}

let root = "";
const at = (name: string) => join(root, name);
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
/** A small dataset (the default one's build, 300 problems) for the commands that train. */
const DATA = () => at("data");

before(async () => {
  root = fs.mkdtempSync(join(tmpdir(), "dehvf-exit-"));
  await buildDefaultData(DATA(), { train: 200, val: 50, test: 50 });
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

/** A safetensors file with this header and no data. */
function safetensors(file: string, header: object): string {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json]));
  return file;
}

describe("a damaged or foreign checkpoint: exit 1 naming the file and the tensor", () => {
  test("a tensor declared larger than the file is refused from the header, before anything is allocated", () => {
    // 1 TiB of F32: allocating it first would die in a typed-array constructor (exit 2) or the OOM killer
    const file = safetensors(at("huge.safetensors"), { "vision.patch": { dtype: "F32", shape: [2 ** 38], data_offsets: [0, 2 ** 40] } });
    assertUserError(dehvf(["eval", MICRO, "--checkpoint", file]), new RegExp(escape(file)), /tensor "vision\.patch"/, /past the end of the data \(0 bytes\)/);
  });

  test("a file that is not safetensors at all, and a directory in the weights' place", () => {
    assertUserError(dehvf(["eval", MICRO, "--checkpoint", "/etc/passwd"]), /\/etc\/passwd: header length \d+ exceeds/);
    const stage = at("stage");
    fs.mkdirSync(join(stage, "final.safetensors"), { recursive: true });
    assertUserError(
      dehvf(["eval", MICRO, "--checkpoint", stage]),
      new RegExp(`${escape(join(stage, "final.safetensors"))}: not a regular file \\(a directory\\)`),
    );
  });
});

describe("bad flag values: commander's message naming the flag, exit 1", () => {
  test("non-numeric, zero, negative and out-of-range values", () => {
    const cases: [string[], RegExp][] = [
      [["train", MICRO, "--steps", "abc"], /option '--steps <n>' argument 'abc' is invalid/],
      [["run", MICRO, "--batch", "0"], /option '--batch <n>' argument '0' is invalid/],
      [["run", MICRO, "--seed", "-1"], /option '--seed <n>' argument '-1' is invalid/],
      [["compile", MICRO, "--dim", "T=0"], /option '--dim <name=value...>' argument 'T=0' is invalid/],
      [["eval", MICRO, "--checkpoint", "x", "--problems", "-1"], /option '--problems <n>' argument '-1' is invalid/],
    ];
    for (const [args, message] of cases) assertUserError(dehvf(args), message);
  });

  test("the parsers take plain decimal whole numbers only", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), (n) => {
        assert.equal(positiveInt(String(n)), n);
        assert.equal(nonNegativeInt(String(n)), n);
        assert.deepEqual(dimAssignment(`S=${n}`, { T: 3 }), { T: 3, S: n });
      }),
      fcRuns(100),
    );
    assert.equal(nonNegativeInt("0"), 0);
    for (const bad of ["", " 3", "3 ", "1e3", "0x10", "-1", "2.5", "abc", "Infinity", "9007199254740993"])
      assert.throws(() => positiveInt(bad), InvalidArgumentError, bad);
    for (const bad of ["T", "T=", "=3", "T=0", "T=-2", "T=x", "3=4"]) assert.throws(() => dimAssignment(bad), InvalidArgumentError, bad);
  });
});

describe("the file system and the machine: exit 1 with the path and the reason in plain words", () => {
  test("no WebGPU adapter", () => {
    assertUserError(dehvf(["info"], NO_GPU), /^error: no WebGPU adapter found\./m, /npm run setup/);
  });

  test("--out under a regular file", () => {
    const file = at("a-file");
    fs.writeFileSync(file, "not a directory\n");
    assertUserError(
      dehvf(["train", MICRO, "--data", DATA(), "--out", join(file, "runs")]),
      new RegExp(`${escape(file)} is a file, not a directory, while \\w+`),
    );
  });

  test("each errno the environment causes reads plainly; the ones only a bug causes stay internal", () => {
    const sys = (code: string, syscall: string, path?: string) =>
      Object.assign(new Error(`${code}: ${syscall}`), { code, syscall, errno: -1, ...(path ? { path } : {}) });
    assert.equal(describeSystemError(sys("ENOSPC", "write", "/x/y")), "no space left on device while writing /x/y");
    assert.equal(describeSystemError(sys("EROFS", "mkdir", "/ro/runs")), "read-only file system while creating directory /ro/runs");
    assert.equal(describeSystemError(sys("EACCES", "open", "/x/y")), "permission denied while opening /x/y");
    assert.equal(describeSystemError(sys("EMFILE", "open", "/x/y")), "too many open files in this process while opening /x/y");
    assert.equal(describeSystemError(withPath(sys("ENOSPC", "fsync"), "/x/ckpt.safetensors")), "no space left on device while syncing /x/ckpt.safetensors");
    // real ones, from the system
    const real = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e;
      }
      assert.fail("expected a system error");
    };
    assert.match(describeSystemError(real(() => fs.readFileSync(join(root, "nothing-here"))))!, /^no such file or directory while opening .*nothing-here$/);
    assert.match(describeSystemError(real(() => fs.readFileSync(root)))!, /^it is a directory, not a file, while reading/);
    // a full disk: the write's error names no file, so writers add theirs
    if (fs.existsSync("/dev/full"))
      assert.equal(
        describeSystemError(
          withPath(
            real(() => fs.writeFileSync("/dev/full", "x")),
            "/dev/full",
          ),
        ),
        "no space left on device while writing /dev/full",
      );
    const lines: string[] = [];
    const write = (t: string) => void lines.push(t);
    assert.equal(report(sys("ENOSPC", "write", "/x/y"), write), 1);
    assert.equal(report(new SafetensorsError("/x/w.safetensors", "header must start with '{'"), write), 1);
    assert.equal(report(new NoAdapterError(), write), 1);
    assert.equal(report(sys("EBADF", "read"), write), 2);
    assert.equal(report(Object.assign(new TypeError("bad arg"), { code: "ERR_INVALID_ARG_TYPE" }), write), 2);
    assert.equal(report(new TypeError("x is undefined"), write), 2);
    assert.match(lines.join(""), /^error: no space left on device while writing \/x\/y$/m);
  });
});

describe("work too large for the device or the host: refused up front with the size, the limit and what to change", () => {
  test("an input past the device's binding limit, before the plan is built", () => {
    assertUserError(
      dehvf(["compile", MICRO, "--emit", "plan", "--seq", "100000000"], NO_GPU),
      /input `tokens` \[B, T\] \(here \[2, 100000000\]\) needs 762\.9 MiB on the device, over its 128\.0 MiB limit for one storage binding/,
      /--> spec\/fixtures\/train\/micro\.dehvf:\d+:\d+/,
      /help: it grows with B and T: use a smaller --batch or --seq/,
    );
  });

  test("an intermediate past it: the kernel that writes it and its DSL line", () => {
    // every input, parameter and output fits; the FFN's hidden activations do not
    assertUserError(
      dehvf(["compile", "models/tiny-vqa.dehvf", "--emit", "plan", "--batch", "4096", "--seq", "64"], NO_GPU),
      /`\w+` result of kernel #\d+ in `language\.layer\.\d\.\w+` \[B, [^\]]+\] \(here \[4096, [^\]]+\]\) needs [\d.]+ MiB on the device/,
      /--> models\/std\/llama\.dehvf:\d+:\d+/,
    );
  });

  test("the interpreter at a huge --seq: the host-memory estimate against this machine's, before allocating", () => {
    assertUserError(
      dehvf(["run", MICRO, "--backend", "interp", "--seq", "100000000"]),
      /running `TinyVQA` in the float64 interpreter at B=2, T=100000000 needs about [\d.]+ \w+ of host memory \(parameters [^)]*\), more than this machine's [\d.]+ GiB/,
    );
  });

  test("a 7B model in float64 on a machine smaller than its parameters", {
    skip: totalmem() > 48 * 2 ** 30 && "this machine holds 7B float64 parameters",
  }, () => {
    assertUserError(
      dehvf(["run", "models/clip-l14-llama7b-memvp.dehvf", "--backend", "interp", "--batch", "1", "--seq", "8"]),
      /needs about 5\d\.\d GiB of host memory \(parameters 52\.\d GiB/,
      /dehvf keeps every parameter in float64 on the host/,
    );
  });
});

describe("a train task that does not fit the model", () => {
  let data: LoadedDataset;
  before(async () => {
    data = await loadDataset(DATA(), { splits: ["train"] });
  });

  let files = 0;
  /** Writes `source` to a fresh .dehvf file: the file, its first train section and the model that trains. */
  function stageOf(source: string) {
    const file = at(`model-${files++}.dehvf`);
    fs.writeFileSync(file, source);
    const program = loadProgram(file);
    const stage = trainStages(program)[0];
    return { file, stage, model: elaborate(program, stage.model) };
  }
  const LM = (vocab: number, task: string, frozen = "") => `import "std/llama.dehvf"
model TinyLM {
  language = Llama(vocab: ${vocab}, d: 32, layers: 2, heads: 2, ffn: 48) ${frozen}
  forward(tokens: [B, T] int) -> [B, T, ${vocab}] = language(tokens)
}
train lm {
  model = TinyLM
  task = "${task}"
  batch = 4
  steps = 2
}
`;
  const refusal = (f: () => void, ...patterns: RegExp[]) =>
    assert.throws(f, (e: unknown) => {
      assert.ok(e instanceof DehvfError, String(e));
      const text = e.render();
      for (const p of patterns) assert.match(text, p);
      return true;
    });

  test("the fixtures' own stages fit", () => {
    const program = loadProgram(MICRO);
    for (const model of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"])
      for (const stage of stagesFor(trainStages(program), model)) checkTaskFits(elaborate(program, stage.model ?? model), stage, data);
  });

  test("a language model on the image task, a vocabulary smaller than the tokenizer, a frozen model", () => {
    const classify = stageOf(LM(128, "classify"));
    refusal(
      () => checkTaskFits(classify.model, classify.stage, data),
      /input `tokens` is not fed by task "classify", which feeds `image`/,
      new RegExp(`--> ${escape(classify.file)}:6:1`),
    );
    const small = stageOf(LM(16, "text"));
    refusal(
      () => checkTaskFits(small.model, small.stage, data),
      new RegExp(`output \`out\` \\[B, T, 16\\] scores 16 classes on its last axis, fewer than .*the ${data.tokenizer!.size} tokens`),
    );
    const frozen = stageOf(LM(128, "text", "frozen"));
    refusal(() => checkTaskFits(frozen.model, frozen.stage, data), /every parameter on the way to output `out` is frozen/);
  });

  test("the train command refuses it at the train section, before compiling", () => {
    const { file } = stageOf(LM(128, "classify"));
    assertUserError(dehvf(["train", file, "--data", DATA(), "--out", at("runs")]), /does not fit train section `lm`/, new RegExp(`--> ${escape(file)}:6:1`));
  });

  test("an image of another shape than the data's", () => {
    const vit = stageOf(`import "std/vit.dehvf"
import "std/llama.dehvf"
model Classifier {
  vision = ViT(image: 28, patch: 14, d: 16, layers: 1, heads: 2, mlp: 32, channels: 1)
  head   = Linear(vision.d, 40)
  forward(image: [B, 1, 28, 28]) -> [B, 4, 10] = reshape(head(vision(image)), [B, 4, 10])
}
train pre {
  model = Classifier
  task = "classify"
  batch = 4
}
`);
    refusal(
      () => checkTaskFits(vit.model, vit.stage, data),
      /input `image` is \[B, 1, 28, 28\] \(here \[4, 1, 28, 28\]\), but task "classify" feeds \[4, 1, 56, 56\]/,
    );
  });
});
