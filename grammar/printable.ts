/**
 * Characters a model file must not get to the user's terminal as they are: C0 and C1
 * controls and DEL (escape sequences can recolour, retitle or clear the screen; BEL
 * rings), and characters that are invisible or reorder the text around them
 * (zero-width spaces, bidirectional overrides, a stray BOM). Tab and newline stay.
 */
const UNPRINTABLE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

function escape(ch: string): string {
  const code = ch.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u{${code.toString(16)}}`;
}

/** `s` with every unprintable character spelled as an escape (`\x1b`, `\u{202e}`). */
export function printable(s: string): string {
  return s.replace(UNPRINTABLE, escape);
}

/** `s` cut to about `max` characters by an ellipsis in the middle, so both ends stay recognisable. */
export function shorten(s: string, max = 40): string {
  if (s.length <= max) return s;
  const tail = Math.floor(max / 3);
  return `${s.slice(0, max - tail - 1)}…${s.slice(-tail)}`;
}
