import type { CompiledModel } from "../compiler/elaborate.ts";
import { loadTokenizer } from "../data/tokenizers/load.ts";
import type { Tokenizer } from "../data/tokenizers/tokenizer.ts";
import { UserError } from "../grammar/diagnostics.ts";

/** The tokenizer a command uses for `model`: the one given on the command line, else the model file's `tokenizer`. */
export function resolveTokenizer(model: CompiledModel, override?: string): Promise<Tokenizer> {
  const path = override ?? model.tokenizer;
  if (!path) throw new UserError(`model \`${model.name}\` names no tokenizer: declare \`tokenizer "PATH"\` in the model, or pass --tokenizer PATH`);
  return loadTokenizer(path);
}
