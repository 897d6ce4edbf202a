// The shipped backbones of models/tiny-vqa.dehvf, made again: trains its two pre-training
// stages (the ViT classifier, then the LM: ~25 min on 2 CPU cores) into --out, then compares
// each result's weights (the SHA-256 of its tensors that dehvf records in every file) with
// the copy in models/tiny-vqa.backbones. Exit 0 only when both are bit for bit the same.
//   npm run backbones [-- --out runs/backbones]   (not "pretrain": npm would run that before every `npm run train`)   (tsx scripts/pretrain.ts)
// To replace the shipped copy: remove models/tiny-vqa.backbones/<stage>, then
// `--out models/tiny-vqa.backbones` (the comparison is then with itself).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadMeta, recordedDigest } from "../train/checkpoint.ts";

const SHIPPED = "models/tiny-vqa.backbones";
const STAGES = [
  ["TinyViTClassifier", "pretrain_vision"],
  ["TinyLM", "pretrain_language"],
] as const;
const i = process.argv.indexOf("--out");
const out = i >= 0 ? process.argv[i + 1] : "runs/backbones";

for (const [model] of STAGES) {
  const r = spawnSync(process.execPath, ["bin/dehvf.js", "train", "models/tiny-vqa.dehvf", "-m", model, "--out", out], { stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
let same = true;
for (const [, stage] of STAGES) {
  const [made, shipped] = [join(out, stage, "final.safetensors"), join(SHIPPED, stage, "final.safetensors")];
  if (!existsSync(shipped)) {
    console.log(`${stage}: nothing shipped in ${SHIPPED} to compare with`);
    continue;
  }
  const [a, b] = [await loadMeta(made), await loadMeta(shipped)];
  const [da, db] = [recordedDigest(a), recordedDigest(b)];
  const identical = da !== undefined && da === db;
  same &&= identical;
  console.log(
    `${stage}: ${identical ? "bit for bit the shipped weights" : "differs from the shipped weights"} (sha256 of the tensors ${da?.slice(0, 16)}… vs ${db?.slice(0, 16)}…; identity ${a.key === b.key ? "the same" : "different"})`,
  );
}
process.exit(same ? 0 : 1);
