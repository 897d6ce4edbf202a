import { Worker } from "node:worker_threads";

/*
 * A line every few seconds while long work runs, even when that work blocks the main
 * thread: lavapipe compiles a plan's shaders on the first dispatch, synchronously inside
 * a Dawn call, for up to a minute, and no timer of the main thread fires meanwhile. So
 * the lines come from a worker thread, which writes to the file descriptor itself (a
 * worker's process.stdout is relayed through the main thread). The main thread only says
 * what to print (`watch`), how far the work is (`status`) and when it printed something
 * itself (`printed`); a line goes out only after `everyMs` of silence.
 */

/** The worker: plain JavaScript, so it runs without the TypeScript loader. */
const WORKER = `
const { parentPort } = require("node:worker_threads");
const { writeSync } = require("node:fs");
const watches = [];
let last = Date.now();
const fmt = (ms) => { const s = Math.round(ms / 1000); if (s < 60) return s + "s"; const m = Math.floor(s / 60); return m < 60 ? m + "m" + String(s % 60).padStart(2, "0") + "s" : Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m"; };
setInterval(() => {
  const w = watches[watches.length - 1];
  const now = Date.now();
  if (!w || now - Math.max(last, w.since) < w.everyMs) return;
  try { writeSync(w.fd, w.text + (w.status ? ": " + w.status : "") + " (" + fmt(now - w.since) + ")\\n"); } catch {}
  last = now;
}, 250).unref();
parentPort.on("message", (m) => {
  const i = watches.findIndex((w) => w.id === m.id);
  if (m.type === "watch") watches.push({ id: m.id, text: m.text, since: m.since, everyMs: m.everyMs, fd: m.fd, status: undefined });
  else if (m.type === "text" && i >= 0) { watches[i].text = m.text; if (m.since !== undefined) watches[i].since = m.since; }
  else if (m.type === "status" && i >= 0) watches[i].status = m.status;
  else if (m.type === "stop" && i >= 0) watches.splice(i, 1);
  else if (m.type === "printed") last = m.at;
});
`;

let worker: Worker | undefined;

function post(message: object): void {
  if (!worker) {
    worker = new Worker(WORKER, { eval: true });
    worker.unref();
  }
  worker.postMessage(message);
}

let ids = 0;

export interface Watch {
  /** what the line says from now on; `since`: the time its "(12s)" counts from (default: unchanged) */
  text(text: string, since?: number): void;
  /** how far the work is, appended to the line ("1,024 of 2,000 decoded") */
  status(text: string | undefined): void;
  stop(): void;
}

/**
 * From now on, whenever nothing was printed for `everyMs`, prints `text` with the time
 * since this call to file descriptor `fd` (stdout by default). Watches nest: the newest
 * running one speaks.
 */
export function watch(text: string, opts: { everyMs?: number; fd?: number; since?: number } = {}): Watch {
  const id = ids++;
  post({ type: "watch", id, text, since: opts.since ?? Date.now(), everyMs: opts.everyMs ?? 8000, fd: opts.fd ?? 1 });
  let stopped = false;
  const send = (m: object) => {
    if (!stopped) post({ ...m, id });
  };
  return {
    text: (t, since) => send({ type: "text", text: t, since }),
    status: (st) => send({ type: "status", status: st }),
    stop: () => {
      send({ type: "stop" });
      stopped = true;
    },
  };
}

/** The main thread printed a line: a watch stays quiet for another interval. */
export function printed(): void {
  if (worker) post({ type: "printed", at: Date.now() });
}
