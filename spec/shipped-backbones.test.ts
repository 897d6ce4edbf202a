/**
 * The shipped backbones (models/tiny-vqa.backbones) are what the model file's own train
 * sections make from the default data: each stage's recorded identity key equals the key
 * `dehvf train` computes now, so `npm run train` takes them rather than silently spending
 * 25 minutes pre-training again after a change to a section, a model or the data.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { elaborate } from "../compiler/elaborate.ts";
import { buildDefaultData } from "../data/build.ts";
import { loadProgram } from "../grammar/modules.ts";
import { loadMeta, recordedDigest } from "../train/checkpoint.ts";
import { Dataset } from "../train/data.ts";
import { stageKey } from "../train/run-stage.ts";
import { trainStages } from "../train/stages.ts";

const SHIPPED = "models/tiny-vqa.backbones";
const work = mkdtempSync(join(tmpdir(), "dehvf-shipped-"));
after(() => rmSync(work, { recursive: true, force: true }));

test("each shipped backbone records the identity key its train section, model and the default data give now", async () => {
  await buildDefaultData(work);
  const dataset = await Dataset.open(work, () => {});
  const program = loadProgram("models/tiny-vqa.dehvf");
  const stages = trainStages(program);
  const done = new Map<string, { identity: Awaited<ReturnType<typeof stageKey>>["identity"]; key: string; weights: string }>();
  const pretraining = stages.filter((s) => s.model !== undefined);
  assert.deepEqual(
    pretraining.map((s) => s.name),
    ["pretrain_vision", "pretrain_language"],
  );
  for (const cfg of pretraining) {
    const name = cfg.name;
    const { digest } = await dataset.forStage(elaborate(program, cfg.model!), cfg);
    const { identity, key } = await stageKey(
      program,
      cfg,
      cfg.model!,
      digest,
      cfg.backbones.map((b) => done.get(b)!),
    );
    const meta = await loadMeta(join(SHIPPED, name, "final.safetensors"));
    assert.equal(meta.key, key, `${name}: the shipped result was made from something else; run \`npm run backbones\` and replace it (see scripts/pretrain.ts)`);
    done.set(name, { identity, key, weights: recordedDigest(meta)! });
  }
});
