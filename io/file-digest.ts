import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { writeFileAtomicSync } from "./atomic.ts";

/*
 * Content digests of checkpoints, for stage identities: a pretrained backbone that changes
 * must retrain what was fine-tuned on it. A checkpoint can be many GB, so a digest is
 * remembered per file under its size, modification time and inode (as make and git's index
 * do); any of them changing reads the file again.
 */

const CACHE = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "dehvf", "digests.json");

type Cache = Record<string, { key: string; sha256: string }>;

function readCache(): Cache {
  try {
    const v = JSON.parse(readFileSync(CACHE, "utf8")) as unknown;
    return v && typeof v === "object" && !Array.isArray(v) ? (v as Cache) : {};
  } catch {
    return {};
  }
}

function hashFile(path: string): Promise<string> {
  return new Promise((done, fail) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (chunk) => h.update(chunk))
      .on("error", fail)
      .on("end", () => done(h.digest("hex")));
  });
}

async function fileSha(path: string, cache: Cache): Promise<{ sha256: string; changed: boolean }> {
  const st = statSync(path);
  const key = `${st.size}:${st.mtimeMs}:${st.ino}`;
  const hit = cache[path];
  if (hit?.key === key) return { sha256: hit.sha256, changed: false };
  const sha256 = await hashFile(path);
  cache[path] = { key, sha256 };
  return { sha256, changed: true };
}

/** The digest of a file's bytes, or of a directory's regular files (names and bytes, sorted by name). */
export async function contentDigest(path: string): Promise<string> {
  const cache = readCache();
  let changed = false;
  const files = statSync(path).isDirectory()
    ? readdirSync(path)
        .sort()
        .map((name) => join(path, name))
        .filter((p) => statSync(p).isFile())
    : [path];
  const h = createHash("sha256");
  for (const f of files) {
    const r = await fileSha(f, cache);
    changed ||= r.changed;
    h.update(`${f === path ? "" : f.slice(path.length)}:${r.sha256}\n`);
  }
  if (changed) {
    try {
      if (!existsSync(join(CACHE, ".."))) mkdirSync(join(CACHE, ".."), { recursive: true });
      writeFileAtomicSync(CACHE, JSON.stringify(cache));
    } catch {
      // a cache that cannot be written only costs a re-read next time
    }
  }
  return h.digest("hex");
}
