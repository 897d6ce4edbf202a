/**
 * The on-disk cache of autotuned matmul configurations: one JSON file per adapter,
 * `<dir>/<key>.json`, dir = $DEHVF_AUTOTUNE_CACHE or ${XDG_CACHE_HOME:-~/.cache}/dehvf/autotune.
 * The key hashes everything a measured choice depends on besides the matmul itself:
 * the adapter and driver, the limits and subgroup sizes the generators read, and
 * MATMUL_GENERATOR_VERSION (new kernel code gets a new file, never an old timing). A file
 * that does not parse or was written for another identity is ignored with a one-line
 * warning and rewritten by the next tune.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { writeJsonAtomic } from "../io/atomic.ts";
import { type KernelTarget, MATMUL_GENERATOR_VERSION, type MatmulOptions } from "../kernels/matmul.ts";
import { parseMatmulKey } from "../kernels/matmul-tuning.ts";
import type { DeviceInfo } from "./device.ts";

/** Bump when the file's layout changes. */
const FORMAT = 1;

export interface AdapterIdentity {
  readonly vendor: string;
  readonly architecture: string;
  readonly description: string;
  readonly device: string;
  /** the kernel generators' view of the device: fallback flag, subgroup sizes, limits */
  readonly target: KernelTarget;
  readonly generator: number;
}

/** One tuned matmul: the options plans use, and what the tune measured (ms per dispatch). */
export interface TunedEntry {
  readonly options: MatmulOptions;
  readonly variant: string;
  readonly defaultMs: number;
  readonly bestMs: number;
}

export function autotuneCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.DEHVF_AUTOTUNE_CACHE || join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "dehvf", "autotune");
}

export function adapterIdentity(info: DeviceInfo, target: KernelTarget, generator = MATMUL_GENERATOR_VERSION): AdapterIdentity {
  return { vendor: info.vendor, architecture: info.architecture, description: info.description, device: info.device, target, generator };
}

/** JSON with object keys sorted, so equal identities hash equally whatever built them. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object")
    return `{${Object.keys(v)
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  return JSON.stringify(v);
}

export function adapterKey(id: AdapterIdentity): string {
  return createHash("sha256").update(canonical(id)).digest("hex").slice(0, 20);
}

export function cacheFile(id: AdapterIdentity, dir = autotuneCacheDir()): string {
  return join(dir, `${adapterKey(id)}.json`);
}

const posInt = (x: unknown): boolean => Number.isInteger(x) && (x as number) > 0;
const OPTION_CHECKS: Record<keyof MatmulOptions, (x: unknown) => boolean> = {
  variant: (x) => x === "sg-texture" || x === "sg-buffer" || x === "tiled" || x === "simple",
  allowTexture: (x) => typeof x === "boolean",
  tm: posInt,
  tn: posInt,
  ku: posInt,
  aLoad: (x) => x === "lane" || x === "lane4",
  bLoad: (x) => x === "lane" || x === "lane4",
  bkLoad: (x) => x === "lane" || x === "k4",
};

function entryProblem(key: string, e: unknown): string | undefined {
  if (!parseMatmulKey(key)) return `bad matmul key ${JSON.stringify(key)}`;
  const x = e as Partial<TunedEntry> | null;
  if (!x || typeof x !== "object" || !x.options || typeof x.options !== "object") return `entry ${key} has no options`;
  for (const [k, v] of Object.entries(x.options))
    if (!(k in OPTION_CHECKS) || !OPTION_CHECKS[k as keyof MatmulOptions](v)) return `entry ${key}: bad option ${k}=${JSON.stringify(v)}`;
  if (typeof x.variant !== "string" || !Number.isFinite(x.defaultMs) || !Number.isFinite(x.bestMs)) return `entry ${key}: bad timings`;
  return undefined;
}

/**
 * The entries cached for `id` in `file`; empty when there is none. A file that does not
 * parse, or belongs to another identity (generator version, adapter), is reported through
 * `warn` (one line) and ignored.
 */
export function loadTuning(file: string, id: AdapterIdentity, warn: (line: string) => void): Map<string, TunedEntry> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") warn(`autotune: cannot read ${file} (${(e as Error).message}); ignoring it`);
    return new Map();
  }
  const ignore = (why: string): Map<string, TunedEntry> => {
    warn(`autotune: ignoring ${file}: ${why}; it will be rewritten by the next tune`);
    return new Map();
  };
  let doc: { format?: unknown; identity?: unknown; entries?: unknown };
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return ignore(`not valid JSON (${(e as Error).message})`);
  }
  if (!doc || typeof doc !== "object" || doc.format !== FORMAT) return ignore(`unknown format ${JSON.stringify(doc?.format)}`);
  const got = doc.identity as Partial<AdapterIdentity> | undefined;
  if (got?.generator !== id.generator) return ignore(`written for matmul generator version ${JSON.stringify(got?.generator)}, this is ${id.generator}`);
  if (canonical(got) !== canonical(id)) return ignore("written for another adapter or limits");
  if (!doc.entries || typeof doc.entries !== "object") return ignore("no entries");
  const entries = new Map<string, TunedEntry>();
  for (const [key, e] of Object.entries(doc.entries)) {
    const problem = entryProblem(key, e);
    if (problem) return ignore(problem);
    entries.set(key, e as TunedEntry);
  }
  return entries;
}

/** Adds `entries` to the file (atomically; entries another process added meanwhile are kept). */
export async function saveTuning(file: string, id: AdapterIdentity, entries: ReadonlyMap<string, TunedEntry>): Promise<void> {
  mkdirSync(dirname(file), { recursive: true });
  const merged = loadTuning(file, id, () => {}); // already warned about when loaded
  for (const [k, e] of entries) merged.set(k, e);
  const sorted = Object.fromEntries([...merged].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  await writeJsonAtomic(file, { format: FORMAT, identity: id, entries: sorted });
}
