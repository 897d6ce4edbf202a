import * as fs from "node:fs";
import { writeFileAtomicSync } from "./atomic.ts";
import { withPath } from "./errno.ts";
import { UserFacingError } from "../util/user-facing-error.ts";

/** A metrics log damaged somewhere other than its last line (which a kill may tear): not ours to repair. */
export class MetricsLogError extends UserFacingError {
  override name = "MetricsLogError";
}

/*
 * Training metrics as JSONL, one record per line. Each record goes to the OS in one write, so a
 * killed run loses at most the line being written; readers drop that torn tail instead of failing.
 */

export interface MetricsRecord {
  step: number;
  [key: string]: unknown;
}

// JSON has no NaN/Infinity and would write null; a NaN loss is exactly what one wants to see in the log.
const NONFINITE: Record<string, number> = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };

function encode(record: MetricsRecord): string {
  return JSON.stringify(record, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v));
}

function decode(line: string): unknown {
  return JSON.parse(line, (_k, v) => (typeof v === "string" && Object.prototype.hasOwnProperty.call(NONFINITE, v) ? NONFINITE[v] : v));
}

function isRecord(v: unknown): v is MetricsRecord {
  return v !== null && typeof v === "object" && !Array.isArray(v) && typeof (v as { step?: unknown }).step === "number";
}

interface Parsed {
  records: MetricsRecord[];
  /** Bytes of the file that hold complete lines; anything after is a torn tail. */
  goodBytes: number;
}

function parse(path: string, text: string): Parsed {
  const records: MetricsRecord[] = [];
  let pos = 0;
  let goodBytes = 0;
  let lineNo = 0;
  while (pos < text.length) {
    lineNo++;
    const nl = text.indexOf("\n", pos);
    const complete = nl >= 0;
    const line = text.slice(pos, complete ? nl : text.length);
    const next = complete ? nl + 1 : text.length;
    if (line.trim() === "") {
      if (complete) goodBytes += Buffer.byteLength(text.slice(pos, next));
      pos = next;
      continue;
    }
    let value: unknown;
    try {
      value = decode(line);
    } catch (e) {
      // Only the last line can be torn by a kill; damage anywhere else is real corruption.
      if (next >= text.length) break;
      throw new MetricsLogError(`${path}:${lineNo}: invalid JSON in metrics log (${(e as Error).message}); only a last line torn by a kill is repaired`);
    }
    if (!complete) break; // parsed, but without its newline an append would glue onto it: treat as torn
    if (!isRecord(value)) throw new MetricsLogError(`${path}:${lineNo}: metrics record must be an object with a numeric "step"`);
    records.push(value);
    goodBytes += Buffer.byteLength(text.slice(pos, next));
    pos = next;
  }
  return { records, goodBytes };
}

function readParsed(path: string): Parsed | undefined {
  let text: string;
  try {
    text = fs.readFileSync(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  return parse(path, text);
}

/** All complete records; a missing file is an empty log, a torn last line is ignored. */
export function readMetrics(path: string): MetricsRecord[] {
  return readParsed(path)?.records ?? [];
}

/**
 * For resume from a checkpoint at `step`: drops every record with a larger step (they will be
 * logged again) and any torn tail. Rewrites atomically so a kill here cannot lose the log.
 * Returns the number of records kept.
 */
export function truncateAfterStep(path: string, step: number): number {
  const parsed = readParsed(path);
  if (!parsed) return 0;
  const kept = parsed.records.filter((r) => r.step <= step);
  if (kept.length === parsed.records.length && parsed.goodBytes === fs.statSync(path).size) return kept.length;
  writeFileAtomicSync(path, kept.map((r) => encode(r) + "\n").join(""));
  return kept.length;
}

export interface MetricsLogOptions {
  /** fsync after every record: survives power loss, costs a disk flush per step. Default false. */
  fsync?: boolean;
}

export class MetricsLog {
  private fd: number | undefined;

  private constructor(
    readonly path: string,
    fd: number,
    private readonly fsync: boolean,
  ) {
    this.fd = fd;
  }

  /** Opens for appending; a torn tail left by a killed run is cut so new lines start clean. */
  static open(path: string, options: MetricsLogOptions = {}): MetricsLog {
    const parsed = readParsed(path);
    if (parsed && parsed.goodBytes !== fs.statSync(path).size) fs.truncateSync(path, parsed.goodBytes);
    return new MetricsLog(path, fs.openSync(path, "a"), options.fsync ?? false);
  }

  append(record: MetricsRecord): void {
    if (this.fd === undefined) throw new Error(`${this.path}: metrics log is closed`);
    if (!Number.isFinite(record.step)) throw new Error(`${this.path}: metrics record step must be finite, got ${record.step}`);
    const bytes = Buffer.from(encode(record) + "\n", "utf8");
    // A record goes out in one write (the loop only covers short writes), so a kill tears at most the last line.
    let done = 0;
    try {
      while (done < bytes.length) done += fs.writeSync(this.fd, bytes, done, bytes.length - done);
    } catch (e) {
      throw withPath(e, this.path);
    }
    if (this.fsync) fs.fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd === undefined) return;
    fs.closeSync(this.fd);
    this.fd = undefined;
  }
}
