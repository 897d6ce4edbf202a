/**
 * `npm run web [-- --port N] [--checkpoint DIR] [--data DIR] [--out DIR] [--build-only] [--screenshot PNG]`:
 * builds the tiny-vqa page (web/build.ts) and serves it on 127.0.0.1. The weights are the
 * main job's trained fine-tuning (runs/finetune-TinyVQA) when it exists.
 */
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Command } from "commander";
import { nonNegativeInt, positiveInt } from "../bin/commands/load.ts";
import { UserFacingError } from "../util/user-facing-error.ts";
import { buildSite, DEFAULT_CHECKPOINT, DEFAULT_DATA } from "../web/build.ts";
import { Chromium } from "../web/chromium.ts";
import { serveStatic } from "../web/serve.ts";

const opts = new Command("web")
  .option("--port <n>", "port on 127.0.0.1 (0: any free one)", nonNegativeInt, 8080)
  .option("--checkpoint <path>", `trained weights (default: ${DEFAULT_CHECKPOINT} when it exists)`)
  .option("--data <dir>", "dataset directory (tokenizer and held-out examples)", DEFAULT_DATA)
  .option("--out <dir>", "where the site is built", "out/web")
  .option("--seq <n>", "compiled window: prompt and answer tokens", positiveInt, 40)
  .option("--build-only", "build the site and exit")
  .option("--screenshot <png>", "open the page in headless Chromium, answer the first held-out question, save a screenshot and exit")
  .parse()
  .opts<{ port: number; checkpoint?: string; data: string; out: string; seq: number; buildOnly?: boolean; screenshot?: string }>();

async function screenshot(root: string, png: string): Promise<void> {
  const { url, server } = await serveStatic(root, 0);
  const browser = Chromium.launch();
  try {
    const tab = await browser.open(url);
    await tab.waitFor("window.dehvf && (window.dehvf.ready || window.dehvf.error)", 180_000);
    await tab.evaluate("document.getElementById('ask').click()");
    const status = await tab.waitFor<string>(
      "(s => (s.startsWith('answered') || s.startsWith('error')) && s)(document.getElementById('status').textContent)",
      300_000,
    );
    writeFileSync(png, await tab.screenshot());
    if (status.startsWith("error")) throw new UserFacingError(`the page failed (${status}); its screenshot is in ${png}`);
    console.log(`${status}: "${await tab.evaluate<string>("document.getElementById('answer').textContent")}"; wrote ${png}`);
  } finally {
    await browser.close();
    server.close();
  }
}

const checkpoint = opts.checkpoint ?? (existsSync(join(DEFAULT_CHECKPOINT, "final.safetensors")) ? DEFAULT_CHECKPOINT : undefined);
if (!checkpoint) console.log(`no trained fine-tuning at ${DEFAULT_CHECKPOINT} (run \`npm run train\` first): the page runs the untrained fusion`);
try {
  const site = await buildSite({ out: opts.out, checkpoint, data: opts.data, perType: 3, seq: opts.seq });
  console.log(`built ${site.out}: ${site.examples} held-out examples, weights ${checkpoint ? `trained (${checkpoint})` : "untrained"}`);
  if (opts.screenshot) await screenshot(site.out, opts.screenshot);
  else if (!opts.buildOnly) {
    const { url } = await serveStatic(site.out, opts.port);
    console.log(`serving ${url}  (Ctrl-C stops; Chromium on a machine without a GPU needs --enable-unsafe-webgpu)`);
  }
} catch (e) {
  // exit 1 for what the user or the machine can fix (a missing dataset, checkpoint or
  // browser, a port in use), 2 for our bugs
  const code = (e as NodeJS.ErrnoException).code;
  if (e instanceof UserFacingError || code === "EADDRINUSE" || code === "EACCES" || code === "ERR_SOCKET_BAD_PORT") {
    console.error(`dehvf web: ${(e as Error).message}`);
    process.exit(1);
  }
  console.error(e);
  process.exit(2);
}
