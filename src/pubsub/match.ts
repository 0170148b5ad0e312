// Redis glob patterns (`PSUBSCRIBE`, `KEYS`), reproduced from `stringmatchlen` in Redis's
// util.c and checked against a real redis-server in test/match.test.ts. Redis matches
// bytes, so patterns and channels are compared as their UTF-8 encodings: `?` is one byte
// and "é" is two.
//
// Redis's quirks, all kept:
// - a non-empty pattern never matches the empty channel, not even `*` (only `KEYS *` is
//   special-cased in Redis, PSUBSCRIBE is not); the empty pattern matches only "";
// - an unterminated `[` is a class running to the end of the pattern (`[ab` is `[ab]`,
//   `[^` matches any byte, a lone `[` matches nothing); `[]` matches nothing, `[^]` any byte;
// - `\x` is a literal x, inside and outside brackets; a trailing lone `\` is a literal `\`;
// - `[z-a]` is `[a-z]`; a range may end in `]` (`[a-]` is the range `]`..`a`, unterminated);
//   range ends are C `char`s, signed on x86-64, so a range from byte 0x7F to 0x80 covers
//   every byte;
// - past 1000 nested `*` Redis gives up with "no match" (CVE-2024-31228 fix), so a pattern
//   with more than 1000 `*` runs before its last token matches nothing.
//
// Matching compiles the pattern once into one-byte tokens and `*`, then runs the classic
// two-pointer algorithm (backtrack only to the last `*`): same answers as Redis's recursion,
// O(pattern × channel) at worst instead of exponential.

// --- tokens ---

const LITERAL = 0;
const ANY = 1;
const CLASS = 2;
const STAR = 3;

/** Redis's `nesting > 1000` guard in stringmatchlen_impl. */
const MAX_NESTING = 1000;

/** Channels up to this many UTF-8 bytes are encoded into a shared buffer; longer ones get their own. */
const SCRATCH_MAX = 64 * 1024;
let scratch = new Uint8Array(256);

/**
 * Compiles a Redis glob pattern into a matcher with exactly Redis's semantics
 * (`stringmatchlen` in util.c), on the UTF-8 bytes of pattern and channel.
 * @example
 * const m = compileGlob("news.[a-z]*");
 * m("news.sport"); // true
 * m("news.42");    // false
 */
export function compileGlob(pattern: string): (channel: string) => boolean {
  const p = encode(pattern, new Uint8Array(pattern.length * 3));
  const kinds: number[] = [];
  const values: number[] = [];
  const classes: number[] = [];
  const L = p.length;
  let i = 0;
  while (i < L) {
    const c = p[i]!;
    if (c === 0x2a /* * */) {
      while (i < L && p[i] === 0x2a) i++;
      kinds.push(STAR);
      values.push(0);
      continue;
    }
    if (c === 0x3f /* ? */) {
      kinds.push(ANY);
      values.push(0);
      i++;
    } else if (c === 0x5b /* [ */) {
      i = parseClass(p, i + 1, classes);
      kinds.push(CLASS);
      values.push(classes.length - 256);
    } else {
      if (c === 0x5c /* \ */ && L - i >= 2) i++;
      kinds.push(LITERAL);
      values.push(p[i]!);
      i++;
    }
  }

  const n = kinds.length;
  let stars = 0;
  for (let t = 0; t < n; t++) if (kinds[t] === STAR) stars++;
  const trailingStar = n > 0 && kinds[n - 1] === STAR;
  if (stars - (trailingStar ? 1 : 0) > MAX_NESTING) return () => false;

  const kind = Uint8Array.from(kinds);
  const value = Int32Array.from(values);
  const table = Uint8Array.from(classes);
  const minBytes = n - stars;

  const run = (s: Uint8Array, len: number): boolean => {
    if (len === 0) return n === 0;
    if (len < minBytes || (stars === 0 && len !== n)) return false;
    let t = 0;
    let si = 0;
    let starT = -1;
    let starS = 0;
    while (si < len) {
      if (t < n) {
        const k = kind[t]!;
        if (k === STAR) {
          starT = t++;
          starS = si;
          continue;
        }
        const b = s[si]!;
        if (k === ANY || (k === LITERAL ? value[t] === b : table[value[t]! + b] === 1)) {
          t++;
          si++;
          continue;
        }
      }
      if (starT < 0) return false;
      t = starT + 1;
      si = ++starS;
    }
    while (t < n && kind[t] === STAR) t++;
    return t === n;
  };

  return (channel: string) => {
    const bound = channel.length * 3;
    if (bound > SCRATCH_MAX) {
      const bytes = encode(channel, new Uint8Array(bound));
      return run(bytes, bytes.length);
    }
    if (scratch.length < bound)
      scratch = new Uint8Array(Math.min(SCRATCH_MAX, Math.max(bound, scratch.length * 2)));
    return run(scratch, encodeLength(channel, scratch));
  };
}

// --- internal ---

/**
 * Parses a class starting just after `[` the way Redis's loop does, appends its 256-entry
 * membership table to `out`, and returns the index just past the class.
 */
function parseClass(p: Uint8Array, start: number, out: number[]): number {
  const L = p.length;
  let i = start;
  const negate = i < L && p[i] === 0x5e; /* ^ */
  if (negate) i++;
  const member = new Uint8Array(256);
  for (;;) {
    if (i < L && p[i] === 0x5c /* \ */ && L - i >= 2) {
      member[p[++i]!] = 1;
    } else if (i < L && p[i] === 0x5d /* ] */) {
      break;
    } else if (i >= L) {
      // Redis backs up onto the last byte, so the step below lands on the end.
      i = L - 1;
      break;
    } else if (L - i >= 3 && p[i + 1] === 0x2d /* - */) {
      // Range ends are C `char`s, signed on x86-64, and may come in either order.
      let lo = signed(p[i]!);
      let hi = signed(p[i + 2]!);
      if (lo > hi) [lo, hi] = [hi, lo];
      for (let b = 0; b < 256; b++) if (signed(b) >= lo && signed(b) <= hi) member[b] = 1;
      i += 2;
    } else {
      member[p[i]!] = 1;
    }
    i++;
  }
  for (let b = 0; b < 256; b++) out.push(negate ? 1 - member[b]! : member[b]!);
  return i + 1;
}

const signed = (b: number) => (b >= 0x80 ? b - 0x100 : b);

/** UTF-8 of `s` (lone surrogates as U+FFFD, like Buffer and TextEncoder) in a fresh view of `buf`. */
function encode(s: string, buf: Uint8Array): Uint8Array {
  return buf.subarray(0, encodeLength(s, buf));
}

/** Writes the UTF-8 of `s` into `buf` (at least 3 × s.length bytes) and returns its length. */
function encodeLength(s: string, buf: Uint8Array): number {
  let j = 0;
  const len = s.length;
  for (let i = 0; i < len; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      buf[j++] = c;
    } else if (c < 0x800) {
      buf[j++] = 0xc0 | (c >> 6);
      buf[j++] = 0x80 | (c & 0x3f);
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = i + 1 < len ? s.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
          buf[j++] = 0xf0 | (c >> 18);
          buf[j++] = 0x80 | ((c >> 12) & 0x3f);
          buf[j++] = 0x80 | ((c >> 6) & 0x3f);
          buf[j++] = 0x80 | (c & 0x3f);
          continue;
        }
        c = 0xfffd;
      }
      buf[j++] = 0xe0 | (c >> 12);
      buf[j++] = 0x80 | ((c >> 6) & 0x3f);
      buf[j++] = 0x80 | (c & 0x3f);
    }
  }
  return j;
}
