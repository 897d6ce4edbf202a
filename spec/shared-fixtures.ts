/**
 * Where the project's outside known answers live (../shared/fixtures: stories260K and its
 * llama2.c text). Beside this checkout; for a clone made elsewhere (a temporary directory),
 * beside the checkout it was cloned from; or where DEHVF_SHARED_FIXTURES says. Where none
 * has them, the tests that compare with them fail, naming the path they looked for.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

function originCheckout(): string | undefined {
  const r = spawnSync("git", ["config", "--get", "remote.origin.url"], { cwd: ROOT, encoding: "utf8" });
  const url = r.status === 0 ? r.stdout.trim() : "";
  if (url.startsWith("file://")) return fileURLToPath(url);
  return isAbsolute(url) ? url : undefined;
}

function locate(): string | undefined {
  const candidates = [process.env.DEHVF_SHARED_FIXTURES, join(ROOT, "../shared/fixtures")];
  const origin = originCheckout();
  if (origin) candidates.push(join(origin, "../shared/fixtures"));
  return candidates.find((c): c is string => Boolean(c) && existsSync(join(c!, "stories260K", "stories260K.bin")));
}

/** the fixtures directory, absolute; undefined where none is found */
export const FIXTURES = locate();

/** llama2.c's stories260K with its expected greedy texts (absolute) */
export const STORIES260K = FIXTURES ? join(FIXTURES, "stories260K") : join(ROOT, "../shared/fixtures/stories260K");
