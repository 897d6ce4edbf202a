import cliProgress from "cli-progress";
import { printed, type Watch, watch } from "./heartbeat.ts";

/*
 * Training progress. On a terminal: a cli-progress bar redrawn in place. Elsewhere (CI logs,
 * pipes, files) redraw codes are noise, so it prints one plain line every N seconds or steps.
 * All rates come from an injectable clock so the numbers (and the fallback) can be tested.
 */

export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface TrainingProgressOptions {
  total: number;
  /** Step the run resumes from: rates and ETA count only steps done in this process. */
  startStep?: number;
  stage?: string;
  stream?: ProgressStream;
  /** Milliseconds; defaults to Date.now. */
  now?: () => number;
  /** Overrides `stream.isTTY`. */
  tty?: boolean;
  /** Non-TTY: print at least this often (seconds); also how often a pause says it is still going. Default 7.5. */
  plainEverySeconds?: number;
  /** Non-TTY: also print every this many steps (0 = only by time). Default 0. */
  plainEverySteps?: number;
  /** EMA factor for the displayed loss (0 = raw). Default 0.9. */
  smoothing?: number;
  /** Window for tokens/s and steps/s, so they follow the current speed rather than the run average. Default 20 s. */
  rateWindowSeconds?: number;
  /**
   * When nothing was printed for `plainEverySeconds`, a worker thread prints what is going
   * on to this file descriptor, even while a long kernel compile blocks the main thread
   * (io/heartbeat.ts). Default 1 (stdout); false: off (tests with a fake clock).
   */
  heartbeat?: number | false;
}

export interface ProgressSnapshot {
  stage: string;
  step: number;
  total: number;
  /** Bias-corrected EMA of the loss; NaN before the first loss. */
  loss: number;
  /** NaN until tokens have been reported over a timed interval. */
  tokensPerSecond: number;
  elapsedMs: number;
  /** NaN until a step has been timed. */
  etaMs: number;
}

/** "42s", "3m07s", "2h05m". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "--";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  return `${h}h${String(m % 60).padStart(2, "0")}m`;
}

function formatRate(r: number): string {
  if (!Number.isFinite(r)) return "--";
  if (r >= 1e6) return `${(r / 1e6).toFixed(2)}M`;
  if (r >= 1e4) return `${(r / 1e3).toFixed(1)}k`;
  return r.toFixed(r >= 100 ? 0 : 1);
}

function formatLoss(l: number): string {
  if (Number.isNaN(l)) return "--";
  return Math.abs(l) >= 1e4 || (l !== 0 && Math.abs(l) < 1e-3) ? l.toExponential(3) : l.toFixed(4);
}

/**
 * Long work with no steps to count (compiling pipelines, a final evaluation): says what it
 * is at once, then, after every `everySeconds` of silence, that it is still going (with
 * `status()` where the work can tell how far it is), from a worker thread, so the terminal
 * is never silent for longer even while the work blocks the main thread.
 */
export async function during<T>(
  say: (line: string) => void,
  what: string,
  work: () => Promise<T>,
  opts: { note?: string; everySeconds?: number; status?: () => string | undefined; fd?: number } = {},
): Promise<T> {
  say(`${what}${opts.note ? ` (${opts.note})` : ""} …`);
  printed();
  const w = watch(`  … still ${what}`, { everyMs: (opts.everySeconds ?? 8) * 1000, fd: opts.fd });
  // the worker prints the latest status it was told; a blocked main thread tells it nothing new
  const poll = opts.status && setInterval(() => w.status(opts.status!()), 500);
  if (poll) poll.unref();
  try {
    return await work();
  } finally {
    if (poll) clearInterval(poll);
    w.stop();
  }
}

export class TrainingProgress {
  private readonly total: number;
  private readonly startStep: number;
  private readonly stream: ProgressStream;
  private readonly now: () => number;
  private readonly tty: boolean;
  private readonly plainEveryMs: number;
  private readonly plainEverySteps: number;
  private readonly beta: number;
  private readonly windowMs: number;
  private readonly startTime: number;

  private stage: string;
  private step: number;
  private tokens = 0;
  private sawTokens = false;
  private ema = 0;
  private emaCount = 0;
  /**
   * (active time, step, cumulative tokens), oldest first, spanning about `windowMs`. The
   * first sample is taken at the first update, so the first step of a process (which pays
   * for pipeline compilation) never enters a rate; active time stops during pauses.
   */
  private samples: [number, number, number][] = [];
  private pausedAt: number | undefined;
  private pausedMs = 0;
  private readonly heartbeat: Watch | undefined;
  private readonly heartbeatFd: number | false;
  private pauseWatch: Watch | undefined;
  private lastPlainTime = -Infinity;
  private lastPlainStep = -Infinity;
  private stopped = false;

  private multibar: cliProgress.MultiBar | undefined;
  private bar: cliProgress.SingleBar | undefined;
  private readonly onExit = () => this.stop();

  constructor(opts: TrainingProgressOptions) {
    if (!(opts.total >= 0)) throw new RangeError(`TrainingProgress: total must be >= 0, got ${opts.total}`);
    this.total = opts.total;
    this.startStep = opts.startStep ?? 0;
    this.step = this.startStep;
    this.stage = opts.stage ?? "train";
    this.stream = opts.stream ?? process.stdout;
    this.now = opts.now ?? Date.now;
    this.tty = opts.tty ?? this.stream.isTTY === true;
    this.plainEveryMs = (opts.plainEverySeconds ?? 7.5) * 1000;
    this.plainEverySteps = opts.plainEverySteps ?? 0;
    this.beta = opts.smoothing ?? 0.9;
    this.windowMs = (opts.rateWindowSeconds ?? 20) * 1000;
    this.startTime = this.now();

    if (this.tty) {
      this.multibar = new cliProgress.MultiBar({
        stream: this.stream as NodeJS.WritableStream,
        format: "{stage} |{bar}| {value}/{total} | loss {loss} | {tps} tok/s | {elapsed} < {eta}",
        barsize: 24,
        hideCursor: true,
        // Lines printed through log() clear the bar's line; redraw it even when nothing changed.
        forceRedraw: true,
        fps: 5,
        clearOnComplete: false,
      });
      this.bar = this.multibar.create(this.total, this.step, this.payload());
      // A crash or process.exit must not leave the cursor hidden / wrapping off.
      process.once("exit", this.onExit);
    }
    const fd = (this.heartbeatFd = opts.heartbeat ?? 1);
    if (fd !== false)
      // a little later than the plain lines, so that while the main thread runs they never both print
      this.heartbeat = watch(
        `[${this.stage}] step ${this.step + 1}/${this.total} running: a run's first step also compiles the kernels' shaders on this device (cached for later runs)`,
        { everyMs: this.plainEveryMs * 1.2, fd },
      );
  }

  /** Time that counts for rates: wall time less the pauses. */
  private activeNow(): number {
    const t = this.now();
    return t - this.pausedMs - (this.pausedAt === undefined ? 0 : t - this.pausedAt);
  }

  /** Call after each optimiser step; `tokens` are the tokens processed since the previous call. */
  update(step: number, m: { loss?: number; tokens?: number } = {}): void {
    if (this.stopped) return;
    const t = this.now();
    const active = this.activeNow();
    this.step = step;
    if (m.tokens !== undefined) {
      this.tokens += m.tokens;
      this.sawTokens = true;
    }
    if (m.loss !== undefined) {
      this.ema = this.beta * this.ema + (1 - this.beta) * m.loss;
      this.emaCount++;
    }
    this.samples.push([active, this.step, this.tokens]);
    while (this.samples.length > 2 && active - this.samples[1][0] >= this.windowMs) this.samples.shift();

    // a long silence from here on is a slow step: the worker then repeats the status line
    this.heartbeat?.text(`[${this.stage}] step ${this.step + 1}/${this.total} running, after ${this.step} done`, Date.now());
    if (this.bar) this.bar.update(this.step, this.payload());
    else if (
      t - this.lastPlainTime >= this.plainEveryMs ||
      (this.plainEverySteps > 0 && this.step - this.lastPlainStep >= this.plainEverySteps) ||
      this.step >= this.total
    ) {
      this.printPlain(t);
    }
  }

  setStage(name: string): void {
    this.stage = name;
    if (this.bar) this.bar.update(this.step, this.payload());
  }

  /** Prints a message without corrupting the bar. */
  log(line: string): void {
    printed();
    if (this.multibar && !this.stopped) this.multibar.log(line.endsWith("\n") ? line : line + "\n");
    else this.stream.write(line.endsWith("\n") ? line : line + "\n");
  }

  /** Work between steps (an evaluation): says what it is, keeps saying so, and keeps it out of the rates and the ETA. */
  async during<T>(what: string, work: () => Promise<T>): Promise<T> {
    this.pause(what);
    try {
      return await work();
    } finally {
      this.resume();
    }
  }

  pause(what: string): void {
    if (this.stopped || this.pausedAt !== undefined) return;
    this.pausedAt = this.now();
    this.log(`  ${what} …`);
    if (this.heartbeatFd !== false) this.pauseWatch = watch(`  … still ${what}`, { everyMs: this.plainEveryMs, fd: this.heartbeatFd });
  }

  resume(): void {
    if (this.pausedAt === undefined) return;
    this.pausedMs += this.now() - this.pausedAt;
    this.pausedAt = undefined;
    this.pauseWatch?.stop();
    this.pauseWatch = undefined;
  }

  snapshot(): ProgressSnapshot {
    const t = this.now();
    const [t0, s0, k0] = this.samples[0] ?? [0, this.step, 0];
    const [t1, s1, k1] = this.samples[this.samples.length - 1] ?? [0, this.step, 0];
    const dt = (t1 - t0) / 1000;
    const stepsPerSec = dt > 0 ? (s1 - s0) / dt : NaN;
    const remaining = Math.max(0, this.total - this.step);
    return {
      stage: this.stage,
      step: this.step,
      total: this.total,
      loss: this.emaCount === 0 ? NaN : this.beta === 0 ? this.ema : this.ema / (1 - this.beta ** this.emaCount),
      tokensPerSecond: dt > 0 && this.sawTokens ? (k1 - k0) / dt : NaN,
      elapsedMs: t - this.startTime,
      etaMs: remaining === 0 ? 0 : stepsPerSec > 0 ? (remaining / stepsPerSec) * 1000 : NaN,
    };
  }

  /** One plain status line (what the non-TTY fallback prints). */
  formatLine(): string {
    const s = this.snapshot();
    const pct = s.total > 0 ? ((100 * s.step) / s.total).toFixed(1) : "100.0";
    return `[${s.stage}] step ${s.step}/${s.total} (${pct}%) | loss ${formatLoss(s.loss)} | ${formatRate(s.tokensPerSecond)} tok/s | elapsed ${formatDuration(s.elapsedMs)} | eta ${formatDuration(s.etaMs)}`;
  }

  /** Final render; leaves the cursor visible on a fresh line. Safe to call twice. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.pauseWatch?.stop();
    this.heartbeat?.stop();
    if (this.multibar) {
      this.bar?.update(this.step, this.payload());
      // MultiBar prints log() lines on its next redraw; stop() alone would drop the pending ones.
      this.multibar.update();
      this.multibar.stop();
      process.removeListener("exit", this.onExit);
    } else if (this.lastPlainStep !== this.step) {
      this.printPlain(this.now());
    }
  }

  private printPlain(t: number): void {
    this.stream.write(this.formatLine() + "\n");
    this.lastPlainTime = t;
    printed();
    this.lastPlainStep = this.step;
  }

  private payload(): Record<string, string> {
    const s = this.snapshot();
    return { stage: s.stage, loss: formatLoss(s.loss), tps: formatRate(s.tokensPerSecond), elapsed: formatDuration(s.elapsedMs), eta: formatDuration(s.etaMs) };
  }
}
