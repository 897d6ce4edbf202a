import { DataError } from "../data-error.ts";
import { reDecodingStream } from "./stream.ts";
import { requireSpecial, type DecodeOptions, type EncodeOptions, type SpecialIds, type Tokenizer } from "./tokenizer.ts";

/** run.c's fixed ids: the file has no header for them. */
const UNK = 0;
const BOS = 1;
const EOS = 2;
/** `<0x00>`..`<0xFF>` follow the three: a byte no piece covers is token byte + 3. */
const BYTE_TOKENS = 3;
/** run.c starts every best-pair search from this score, so a pair scoring no higher is never merged. */
const NO_MERGE_SCORE = -1e10;

export interface Llama2cVocab {
  maxTokenLength: number;
  /** raw bytes: a piece need not be valid UTF-8 */
  pieces: Uint8Array[];
  scores: Float32Array;
}

/** Pieces are compared as bytes; a latin1 string is a byte string that a Map can key on. */
const byteString = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("latin1");
const utf8 = (s: string) => new Uint8Array(Buffer.from(s, "utf8"));

/** llama2.c's tokenizer.bin: int32 max_token_length, then per token float32 score, int32 length, the bytes. */
export function parseLlama2cVocab(bytes: Uint8Array, source: string): Llama2cVocab {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 4) throw new DataError(`${source}: ${bytes.byteLength} bytes, too short for llama2.c's tokenizer.bin header`);
  const maxTokenLength = view.getInt32(0, true);
  if (maxTokenLength <= 0) throw new DataError(`${source}: not a llama2.c tokenizer.bin (max_token_length ${maxTokenLength})`);
  const pieces: Uint8Array[] = [];
  const scores: number[] = [];
  for (let at = 4; at < bytes.byteLength; ) {
    const n = pieces.length;
    if (at + 8 > bytes.byteLength)
      throw new DataError(`${source}: truncated: token ${n} at byte ${at} needs an 8-byte score and length, ${bytes.byteLength - at} bytes left`);
    const score = view.getFloat32(at, true);
    const length = view.getInt32(at + 4, true);
    if (!Number.isFinite(score)) throw new DataError(`${source}: not a llama2.c tokenizer.bin (token ${n} at byte ${at} scores ${score})`);
    // run.c sizes its merge buffer from max_token_length, so a longer piece is a damaged (or foreign) file.
    if (length < 0 || length > maxTokenLength)
      throw new DataError(`${source}: not a llama2.c tokenizer.bin (token ${n} at byte ${at} is ${length} bytes long, max_token_length is ${maxTokenLength})`);
    if (at + 8 + length > bytes.byteLength)
      throw new DataError(`${source}: truncated: token ${n} at byte ${at} is ${length} bytes long, ${bytes.byteLength - at - 8} left`);
    pieces.push(bytes.slice(at + 8, at + 8 + length));
    scores.push(score);
    at += 8 + length;
  }
  // Byte fallback encodes through ids 3..258 whatever their pieces are; they must be the byte pieces.
  for (let b = 0; b < 256; b++) {
    const want = `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
    const got = pieces[BYTE_TOKENS + b];
    if (got === undefined || byteString(got) !== want)
      throw new DataError(
        `${source}: not a llama2.c SentencePiece vocabulary (${pieces.length} tokens; token ${BYTE_TOKENS + b} should be ${want}, is ${got === undefined ? "missing" : JSON.stringify(byteString(got))})`,
      );
  }
  return { maxTokenLength, pieces, scores: Float32Array.from(scores) };
}

export function llama2cTokenizer(bytes: Uint8Array, source: string): Tokenizer {
  return new Llama2cTokenizer(parseLlama2cVocab(bytes, source), source);
}

/** C's isprint || isspace in the "C" locale: what run.c's safe_printf lets through as a lone byte. */
const printable = (b: number) => (b >= 0x20 && b <= 0x7e) || (b >= 0x09 && b <= 0x0d);

/** Encoding and decoding as llama2.c's run.c does them (encode, decode, safe_printf). */
class Llama2cTokenizer implements Tokenizer {
  readonly size: number;
  readonly special: SpecialIds = { unk: UNK, bos: BOS, eos: EOS };
  /** run.c's generate encodes the prompt with BOS and without EOS. */
  readonly addsBos = true;
  readonly addsEos = false;
  readonly bosEndsText = true;
  private readonly keys: string[];
  private readonly ids = new Map<string, number>();

  constructor(
    private readonly vocab: Llama2cVocab,
    readonly source: string,
  ) {
    this.size = vocab.pieces.length;
    this.keys = vocab.pieces.map(byteString);
    // run.c binary-searches a sorted copy, so a duplicated piece resolves to either id; the first is as good and stable.
    this.keys.forEach((k, i) => this.ids.has(k) || this.ids.set(k, i));
  }

  token(id: number): string | undefined {
    const piece = this.vocab.pieces[id];
    return piece && new TextDecoder().decode(piece);
  }

  id(token: string): number | undefined {
    return this.ids.get(byteString(utf8(token)));
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids: number[] = opts.bos ? [BOS] : [];
    // SentencePiece's dummy prefix: "Hello" is encoded as " Hello", the way words inside a text are.
    const space = this.ids.get(" ");
    if (text !== "" && space !== undefined) ids.push(space);
    // run.c walks the UTF-8 bytes: a lead byte and up to three continuation bytes make one lookup,
    // and what the vocabulary lacks becomes one byte token per byte. (A NUL, which would end run.c's
    // C string, is encoded like any other byte.)
    const bytes = utf8(text);
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      if ((bytes[i] & 0xc0) !== 0x80) start = i;
      const continues = i + 1 < bytes.length && (bytes[i + 1] & 0xc0) === 0x80 && i + 1 - start < 4;
      if (continues) continue;
      const unit = bytes.subarray(start, i + 1);
      const id = this.ids.get(byteString(unit));
      if (id !== undefined) ids.push(id);
      else for (const b of unit) ids.push(b + BYTE_TOKENS);
      start = i + 1;
    }
    this.merge(ids);
    if (opts.eos) ids.push(requireSpecial(this, "eos", "encoding with EOS"));
    return ids;
  }

  /** Repeatedly merges the adjacent pair whose joined piece scores highest (the leftmost on a tie), until none joins into a piece. */
  private merge(ids: number[]): void {
    const joined = (i: number) => this.ids.get(this.keys[ids[i]] + this.keys[ids[i + 1]]) ?? -1;
    // joins[i]: the piece ids[i] and ids[i+1] make together, or -1; only the merged pair's neighbours change per step.
    const joins = ids.slice(1).map((_, i) => joined(i));
    for (;;) {
      let best = -1;
      let bestScore = NO_MERGE_SCORE;
      joins.forEach((id, i) => {
        if (id >= 0 && this.vocab.scores[id] > bestScore) {
          best = i;
          bestScore = this.vocab.scores[id];
        }
      });
      if (best < 0) return;
      ids[best] = joins[best];
      ids.splice(best + 1, 1);
      joins.splice(best, 1);
      if (best > 0) joins[best - 1] = joined(best - 1);
      if (best < joins.length) joins[best] = joined(best);
    }
  }

  decode(ids: Iterable<number>, opts: DecodeOptions = {}): string {
    const out: number[] = [];
    let prev: number | undefined;
    for (const id of ids) {
      const after = prev;
      prev = id;
      let piece = this.vocab.pieces[id];
      if (piece === undefined || (!opts.keepSpecial && (id === BOS || id === EOS))) continue;
      // SentencePiece strips the dummy prefix's space again: the leading space of the token after BOS.
      if (after === BOS && piece[0] === 0x20) piece = piece.subarray(1);
      const byte = /^<0x([0-9A-Fa-f]{1,2})/.exec(byteString(piece));
      if (byte) piece = Uint8Array.of(Number.parseInt(byte[1], 16));
      // safe_printf: a C string ends at NUL, and a lone unprintable byte (a control or a piece of a UTF-8 character) is not printed.
      const nul = piece.indexOf(0);
      if (nul >= 0) piece = piece.subarray(0, nul);
      if (piece.length === 0 || (piece.length === 1 && !printable(piece[0]))) continue;
      out.push(...piece);
    }
    return new TextDecoder().decode(Uint8Array.from(out));
  }

  streamDecoder(opts: DecodeOptions & { after?: readonly number[] } = {}) {
    return reDecodingStream((ids) => this.decode(ids, opts), undefined, opts.after);
  }
}
