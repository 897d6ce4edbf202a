import assert from "node:assert/strict";
import { test } from "node:test";
import { elaborate } from "../compiler/elaborate.ts";
import { loadProgram } from "../grammar/modules.ts";

test("tiny-vqa elaborates all three models", () => {
  const p = loadProgram("models/tiny-vqa.dehvf");
  for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"]) assert.equal(elaborate(p, name).name, name);
});
