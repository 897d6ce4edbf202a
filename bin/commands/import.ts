import { existsSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import type { Command } from "commander";
import { type CompiledModel, elaborate } from "../../compiler/elaborate.ts";
import { importArguments, modelFileText, modelNameFor, pathLiteral } from "../../compiler/import-model.ts";
import { shownPath } from "../../compiler/weight-sources.ts";
import { DehvfError, UserError } from "../../grammar/diagnostics.ts";
import { loadProgram } from "../../grammar/modules.ts";
import { loadTokenizer } from "../../data/tokenizers/load.ts";
import { writeFileAtomic } from "../../io/atomic.ts";
import { openCatalog } from "../../io/checkpoints/catalog.ts";
import { detectFamily, type Family, families, familyNames } from "../../io/checkpoints/families.ts";

interface ImportOptions {
  output: string;
  model?: string;
  tokenizer?: string;
  as?: string;
}

/** A tokenizer shipped with the checkpoint (Hugging Face's tokenizer.json), if any. */
function bundledTokenizer(checkpoint: string): string | undefined {
  const dir = statSync(checkpoint).isDirectory() ? checkpoint : dirname(checkpoint);
  const candidate = join(dir, "tokenizer.json");
  return existsSync(candidate) ? candidate : undefined;
}

/** The written file, elaborated as `dehvf check` would (every header read again, every parameter resolved); removed if it fails. */
function checkWritten(out: string, family: Family): CompiledModel {
  try {
    return elaborate(loadProgram(out));
  } catch (e) {
    rmSync(out, { force: true });
    if (e instanceof DehvfError) e.addNote(`${shownPath(out)} was not kept: the checkpoint does not fit what family ${family.name} expects`);
    throw e;
  }
}

export function registerImport(program: Command): void {
  program
    .command("import")
    .argument("<checkpoint>", "a Hugging Face model directory (config.json + safetensors, sharded or not), a llama2.c .bin, or a .safetensors file")
    .requiredOption("-o, --output <file>", "the model file to write (.dehvf); weights and tokenizer are named relative to it")
    .option("-m, --model <name>", "name of the model (default: from the checkpoint's file name)")
    .option("--tokenizer <path>", "the tokenizer to declare (default: the checkpoint's tokenizer.json, if it has one)")
    .option("--as <family>", "the checkpoint family (default: detected from the format and config.json)")
    .description("write a model file that instantiates the std library block for a pretrained checkpoint, with its weights and tokenizer")
    .action(async (checkpoint: string, opts: ImportOptions) => {
      const say = (line: string) => process.stdout.write(`${line}\n`);
      if (opts.model !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(opts.model))
        throw new UserError(`-m ${JSON.stringify(opts.model)} is not a model name: use letters, digits and _`);
      const out = resolve(opts.output);
      if (existsSync(out) && statSync(out).isDirectory()) throw new UserError(`-o ${opts.output} is a directory; name the .dehvf file to write`);
      const catalog = openCatalog(checkpoint);
      const family = opts.as ? families().get(opts.as) : detectFamily(catalog);
      if (!family) throw new UserError(`unknown checkpoint family ${JSON.stringify(opts.as)}; known: ${familyNames().join(", ")}`);
      const spec = family.import;
      if (!spec)
        throw new UserError(
          `checkpoint family ${family.name} names no block to import into (its table has no \`import\` section); declare the instance yourself with \`from ${JSON.stringify(checkpoint)} as ${family.name}\``,
        );
      const { args, values } = importArguments(catalog, family, spec);
      const tokenizer = opts.tokenizer ?? bundledTokenizer(catalog.path);
      if (tokenizer && !existsSync(tokenizer)) throw new UserError(`--tokenizer ${tokenizer}: no such file`);
      // the tokenizer must load and fit the embedding (a model may pad its vocabulary, not cut it)
      const tok = tokenizer ? await loadTokenizer(tokenizer) : undefined;
      const vocab = values.vocab;
      if (tok && typeof vocab === "number" && tok.size > vocab)
        throw new UserError(`--tokenizer ${tokenizer} has ${tok.size} tokens, more than the checkpoint's vocabulary of ${vocab}`);
      const seq = catalog.config.seq_len ?? catalog.config.max_position_embeddings;
      const text = modelFileText({
        modelName: opts.model ?? modelNameFor(catalog.path),
        spec,
        family,
        args,
        values,
        weights: pathLiteral(out, catalog.path),
        tokenizer: tokenizer && pathLiteral(out, resolve(tokenizer)),
        comments: [
          `imported by \`dehvf import\` from ${basename(catalog.path)} (checkpoint family ${family.name})`,
          ...(typeof seq === "number" ? [`trained for sequences of up to ${seq} tokens`] : []),
        ],
      });
      await writeFileAtomic(out, text);
      const m = checkWritten(out, family);
      const used = new Set(m.params.flatMap((p) => (p.source ? [p.source.tensor] : [])));
      const unused = [...catalog.tensors.keys()].filter((k) => !used.has(k) && !family.ignore.some((r) => r.test(k)));
      const count = m.params.reduce((a, p) => a + (p.source ? p.shape.reduce((x, y) => x * y, 1) : 0), 0);
      say(
        `wrote ${shownPath(out)}: model ${m.name}, ${spec.instance} = ${spec.block} from ${shownPath(catalog.path)} (${family.name}): ${used.size} tensors, ${count.toLocaleString("en-US")} values`,
      );
      if (tok) say(`tokenizer: ${shownPath(resolve(tokenizer!))} (${tok.size} tokens)`);
      if (unused.length)
        say(
          `note: ${unused.length} checkpoint tensor${unused.length === 1 ? " is" : "s are"} not used: ${unused.slice(0, 5).join(", ")}${unused.length > 5 ? ", …" : ""}`,
        );
    });
}
