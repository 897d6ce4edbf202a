import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { UserFacingError } from "../util/user-facing-error.ts";

/**
 * Headless Chromium driven over the DevTools protocol through `--remote-debugging-pipe`
 * (JSON messages ending in NUL on file descriptors 3 and 4): no WebSocket, no package that
 * downloads a browser. WebGPU needs `--enable-unsafe-webgpu` on a machine without a GPU
 * (the page then gets SwiftShader: ../shared/notes/browser-webgpu.md).
 */

/** The installed Chromium (Debian's `chromium`), or undefined. */
export function chromiumPath(): string | undefined {
  for (const name of ["chromium", "chromium-browser", "google-chrome"]) {
    const r = spawnSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" });
    if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  }
  return undefined;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  method: string;
}

export class Chromium {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private buffered = "";
  private readonly stderr: string[] = [];

  private constructor(
    private readonly proc: ChildProcess,
    private readonly profile: string,
  ) {
    const out = proc.stdio[4] as Readable;
    out.setEncoding("utf8");
    out.on("data", (chunk: string) => {
      this.buffered += chunk;
      let end: number;
      while ((end = this.buffered.indexOf("\0")) >= 0) {
        const msg = JSON.parse(this.buffered.slice(0, end)) as { id?: number; result?: unknown; error?: { message: string } };
        this.buffered = this.buffered.slice(end + 1);
        const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
        if (!p) continue;
        this.pending.delete(msg.id!);
        if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`));
        else p.resolve(msg.result);
      }
    });
    proc.stderr?.on("data", (d: Buffer) => this.stderr.push(d.toString()));
    proc.on("exit", (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`chromium exited (${code}) during ${p.method}: ${this.stderr.join("").slice(-2000)}`));
      this.pending.clear();
    });
  }

  static launch(path = chromiumPath()): Chromium {
    if (!path) throw new UserFacingError("chromium is not installed (npm run setup installs Debian's)");
    const profile = mkdtempSync(join(tmpdir(), "dehvf-chromium-"));
    const proc = spawn(
      path,
      [
        "--headless=new",
        "--enable-unsafe-webgpu",
        "--no-sandbox",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        `--user-data-dir=${profile}`,
        "--remote-debugging-pipe",
        "--window-size=900,760",
        "about:blank",
      ],
      // its own process group, so closing ends its GPU and renderer processes too
      { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"], detached: true },
    );
    return new Chromium(proc, profile);
  }

  send<T = unknown>(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<T> {
    const id = this.nextId++;
    const input = this.proc.stdio[3] as Writable;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, method });
      input.write(`${JSON.stringify({ id, method, params, ...(sessionId && { sessionId }) })}\0`);
    });
  }

  /** A new tab at `url`, attached. */
  async open(url: string): Promise<Tab> {
    const { targetId } = await this.send<{ targetId: string }>("Target.createTarget", { url });
    const { sessionId } = await this.send<{ sessionId: string }>("Target.attachToTarget", { targetId, flatten: true });
    return new Tab(this, sessionId);
  }

  /** Closes the browser (politely, then its whole process group) and removes its profile. */
  async close(): Promise<void> {
    const exited = new Promise<void>((resolve) => (this.proc.exitCode !== null ? resolve() : this.proc.once("exit", () => resolve())));
    await Promise.race([this.send("Browser.close").catch(() => {}), new Promise((r) => setTimeout(r, 3000))]);
    try {
      if (this.proc.pid) process.kill(-this.proc.pid, "SIGKILL");
    } catch {
      // already gone
    }
    await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
    rmSync(this.profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  }
}

export class Tab {
  constructor(
    private readonly browser: Chromium,
    private readonly session: string,
  ) {}

  /** The value of a page expression (awaited when it is a promise), or the exception it threw. */
  async evaluate<T>(expression: string): Promise<T> {
    const r = await this.browser.send<{ result: { value?: T }; exceptionDetails?: { text: string; exception?: { description?: string } } }>(
      "Runtime.evaluate",
      { expression, awaitPromise: true, returnByValue: true },
      this.session,
    );
    if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value as T;
  }

  /** Polls `expression` until it is truthy (its value), or fails after `ms`. */
  async waitFor<T>(expression: string, ms: number): Promise<T> {
    const until = Date.now() + ms;
    for (;;) {
      const v = await this.evaluate<T>(expression);
      if (v) return v;
      if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${expression}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async screenshot(): Promise<Buffer> {
    const { data } = await this.browser.send<{ data: string }>("Page.captureScreenshot", { format: "png" }, this.session);
    return Buffer.from(data, "base64");
  }
}
