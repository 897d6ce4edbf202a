import { existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { DataError } from "../data-error.ts";
import { hfTokenizer } from "./hf.ts";
import { llama2cTokenizer } from "./llama2c.ts";
import type { Tokenizer } from "./tokenizer.ts";

export const TOKENIZER_JSON = "tokenizer.json";
export const TOKENIZER_CONFIG = "tokenizer_config.json";

const FORMATS = "a Hugging Face tokenizer.json, a directory holding one (with tokenizer_config.json beside it when there is one), or llama2.c's tokenizer.bin";

async function read(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new DataError(`cannot read tokenizer file ${path}: ${(e as Error).message}`);
  }
}

function parseJson(text: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new DataError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

/**
 * Reads a tokenizer, whichever of the formats it is in: a file whose first non-blank character is
 * "{" is tokenizer.json, any other file llama2.c's tokenizer.bin (which has no magic number).
 */
export async function loadTokenizer(path: string): Promise<Tokenizer> {
  const info = await stat(path).catch((e: Error) => {
    throw new DataError(`cannot read tokenizer ${path}: ${e.message}`);
  });
  if (info.isDirectory()) {
    const json = join(path, TOKENIZER_JSON);
    if (!existsSync(json)) throw new DataError(`${path}: the directory holds no ${TOKENIZER_JSON} (expected ${FORMATS})`);
    return loadTokenizerJson(json, await read(json));
  }
  const bytes = await read(path);
  const first = bytes.findIndex((b) => b !== 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d);
  if (bytes[first] === 0x7b) return loadTokenizerJson(path, bytes);
  try {
    return llama2cTokenizer(bytes, path);
  } catch (e) {
    // Any file reaches the .bin reader; one not named like a tokenizer.bin gets the list of what is read.
    if (e instanceof DataError && !basename(path).endsWith(".bin"))
      throw new DataError(`${path}: not a tokenizer (expected ${FORMATS}): ${e.message.replace(`${path}: `, "")}`);
    throw e;
  }
}

/** tokenizer.json, and tokenizer_config.json when it lies beside it (as on the Hugging Face Hub). */
async function loadTokenizerJson(path: string, bytes: Buffer): Promise<Tokenizer> {
  const configPath = join(dirname(path), TOKENIZER_CONFIG);
  const config = existsSync(configPath) ? parseJson((await read(configPath)).toString("utf8"), configPath) : undefined;
  return hfTokenizer(parseJson(bytes.toString("utf8"), path), config, path);
}
