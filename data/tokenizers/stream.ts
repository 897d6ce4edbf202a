import type { StreamDecoder } from "./tokenizer.ts";

/**
 * Streaming by re-decoding: each push decodes every id so far and passes on what is new, less
 * a tail the next tokens may still rewrite (`unsettled(text)` characters at the end). Decoders
 * are not token-local (a character split over byte tokens is U+FFFD until its last byte comes;
 * HF's clean-up glues " ." onto the word before), so decoding the whole sequence is what makes
 * the pieces join to exactly `decode(all ids)`. Quadratic in the length: fine for generation.
 */
export function reDecodingStream(
  decode: (ids: readonly number[]) => string,
  unsettled: (text: string) => number = trailingReplacements,
  after: readonly number[] = [],
): StreamDecoder {
  // the text of `after` counts as passed on already: only what follows it is new
  const ids: number[] = [...after];
  let text = decode(ids);
  let emitted = text;
  const take = (upTo: number) => {
    // A rule that let the decoder rewrite text already passed on would be a bug here, not a glitch to stream past.
    if (!text.startsWith(emitted)) throw new Error(`stream decoder: ${JSON.stringify(emitted)} was passed on but the text is now ${JSON.stringify(text)}`);
    const out = upTo > emitted.length ? text.slice(emitted.length, upTo) : "";
    emitted += out;
    return out;
  };
  return {
    push(id) {
      ids.push(id);
      text = decode(ids);
      return take(text.length - unsettled(text));
    },
    flush: () => take(text.length),
  };
}

/** U+FFFD at the end may be a character whose remaining bytes are still to come. */
export function trailingReplacements(text: string): number {
  let n = 0;
  while (n < text.length && text[text.length - 1 - n] === "\uFFFD") n++;
  return n;
}
