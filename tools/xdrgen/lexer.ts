import { SourcePos, XdrgenSyntaxError } from './errors';

export type Token =
  | { readonly kind: 'ident'; readonly text: string; readonly pos: SourcePos }
  | { readonly kind: 'number'; readonly text: string; readonly value: number; readonly hex: boolean; readonly pos: SourcePos }
  | { readonly kind: 'punct'; readonly text: string; readonly pos: SourcePos }
  | { readonly kind: 'eof'; readonly text: ''; readonly pos: SourcePos };

const PUNCTUATION = new Set(['{', '}', '(', ')', '[', ']', '<', '>', ';', ',', '=', ':', '*', '-']);

function isIdentStart(c: string): boolean {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c === '_';
}

function isIdentPart(c: string): boolean {
  return isIdentStart(c) || (c >= '0' && c <= '9');
}

/**
 * Splits a `.x` text into tokens.
 *
 * Skipped: C comments, and whole lines whose first non-blank character is `%` (rpcgen pass-through) or
 * `#` (preprocessor lines such as `#ifdef`/`#endif`, with `\` continuations). Both branches of an `#ifdef`
 * are therefore read as plain definitions. Identifiers follow rpcgen (`_` may lead), numbers are decimal,
 * `0x` hexadecimal or `0` octal and must be safe integers; a leading `-` is a separate token.
 */
export function tokenize(text: string, file: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  let line = 1;
  let col = 1;
  let atLineStart = true;
  const n = text.length;

  const fail = (pos: SourcePos, detail: string): never => {
    throw new XdrgenSyntaxError(file, pos, detail);
  };
  const advance = (count: number): void => {
    for (let k = 0; k < count; k++) {
      if (text[i] === '\n') {
        line++;
        col = 1;
        atLineStart = true;
      } else {
        col++;
      }
      i++;
    }
  };

  while (i < n) {
    const c = text[i];
    if (c === '\n') {
      advance(1);
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v') {
      advance(1);
      continue;
    }
    if (atLineStart && (c === '%' || c === '#')) {
      while (i < n && text[i] !== '\n') {
        if (c === '#' && text[i] === '\\' && (text[i + 1] === '\n' || (text[i + 1] === '\r' && text[i + 2] === '\n'))) {
          advance(text[i + 1] === '\r' ? 3 : 2);
          continue;
        }
        advance(1);
      }
      continue;
    }
    atLineStart = false;
    const pos: SourcePos = { line, column: col };
    if (c === '/' && text[i + 1] === '*') {
      const end = text.indexOf('*/', i + 2);
      if (end < 0) fail(pos, 'unterminated comment');
      advance(end + 2 - i);
      continue;
    }
    if (c === '/' && text[i + 1] === '/') {
      while (i < n && text[i] !== '\n') advance(1);
      continue;
    }
    if (isIdentStart(c)) {
      let j = i + 1;
      while (j < n && isIdentPart(text[j])) j++;
      tokens.push({ kind: 'ident', text: text.slice(i, j), pos });
      advance(j - i);
      continue;
    }
    if (c >= '0' && c <= '9') {
      let j = i + 1;
      while (j < n && isIdentPart(text[j])) j++;
      const raw = text.slice(i, j);
      let big: bigint;
      let hex = false;
      if (/^0[xX][0-9a-fA-F]+$/.test(raw)) {
        big = BigInt(raw.toLowerCase());
        hex = true;
      } else if (/^0[0-7]*$/.test(raw)) {
        big = raw.length > 1 ? BigInt('0o' + raw.slice(1)) : 0n;
      } else if (/^[1-9][0-9]*$/.test(raw)) {
        big = BigInt(raw);
      } else {
        return fail(pos, `malformed number '${raw}'`);
      }
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) fail(pos, `number '${raw}' is larger than 2^53-1`);
      tokens.push({ kind: 'number', text: raw, value: Number(big), hex, pos });
      advance(j - i);
      continue;
    }
    if (PUNCTUATION.has(c)) {
      tokens.push({ kind: 'punct', text: c, pos });
      advance(1);
      continue;
    }
    fail(pos, `unexpected character '${c}'`);
  }
  tokens.push({ kind: 'eof', text: '', pos: { line, column: col } });
  return tokens;
}
