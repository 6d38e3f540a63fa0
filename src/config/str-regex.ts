/**
 * Regular expressions in filter.conf (module alias patterns, allowed labels and
 * ids) are OCaml `Str` regexps, and Caml Crush matches them by appending `$` to
 * the pattern text and matching at offset 0. This file translates that into an
 * equivalent JS RegExp so decisions stay the same after migration.
 *
 * Str syntax facts used here: `\(` `\)` group, `\|` alternation, `\1`..`\9`
 * back-references, `\b` word boundary, `\` before any other character makes it
 * literal; bare `( ) | { }` are literal; `[...]` sets have no escapes (`]`
 * first is literal, `^` first negates); `* + ?` with nothing before them are
 * literal.
 *
 * Because `$` is appended as text, it binds to the last alternative only:
 * `soft\|open` accepts any alias starting with "soft" but only exactly "open".
 */

/** A compiled filter.conf pattern. `regex` is stateless (no `g` flag): use `regex.test(s)`. */
export interface StrPattern {
  /** The pattern as written in filter.conf. */
  source: string;
  regex: RegExp;
}

const JS_SPECIAL = new Set('\\^$.*+?()[]{}|/'.split(''));
const escapeJs = (c: string): string => (JS_SPECIAL.has(c) ? `\\${c}` : c);

/** Translate a Str regexp body to JS regexp source. Throws `Error` on malformed input. */
export function strToJsSource(src: string): string {
  let out = '';
  /** Start in `out` of the last quantifiable atom, or -1 when a quantifier here would be literal. */
  let atom = -1;
  let quantified = false;
  const groups: number[] = [];
  const pushAtom = (text: string, at = out.length): void => {
    out += text;
    atom = at;
    quantified = false;
  };
  const pushAnchor = (text: string): void => {
    out += text;
    atom = -1;
  };
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c === '\\') {
      if (i + 1 >= src.length) throw new Error('trailing backslash');
      const d = src[++i];
      if (d === '(') {
        groups.push(out.length);
        pushAnchor('(');
      } else if (d === ')') {
        const at = groups.pop();
        if (at === undefined) throw new Error('unmatched \\)');
        pushAtom(')', at);
      } else if (d === '|') {
        pushAnchor('|');
      } else if (d === 'b') {
        pushAnchor('\\b');
      } else if (d >= '1' && d <= '9') {
        pushAtom(`\\${d}`);
      } else {
        pushAtom(escapeJs(d));
      }
    } else if (c === '[') {
      let j = i + 1;
      let cls = '[';
      if (src[j] === '^') {
        cls += '^';
        j++;
      }
      const first = j;
      while (j < src.length && (src[j] !== ']' || j === first)) {
        const ch = src[j];
        cls += ch === '\\' || ch === ']' || ch === '[' || ch === '^' ? `\\${ch}` : ch;
        j++;
      }
      if (j >= src.length) throw new Error("unterminated '['");
      pushAtom(`${cls}]`);
      i = j;
    } else if (c === '*' || c === '+' || c === '?') {
      if (atom < 0) {
        pushAtom(`\\${c}`);
      } else {
        // Str reads `e*?` as `(e*)?`; JS would read it as a lazy `e*`.
        if (quantified) out = `${out.slice(0, atom)}(?:${out.slice(atom)})`;
        out += c;
        quantified = true;
      }
    } else if (c === '.') {
      pushAtom('.');
    } else if (c === '^' || c === '$') {
      pushAnchor(c);
    } else {
      pushAtom(escapeJs(c));
    }
  }
  if (groups.length > 0) throw new Error('unclosed \\(');
  return out;
}

/** Compile a filter.conf pattern with Caml Crush's matching rule. Throws `Error` if malformed. */
export function compileStrPattern(source: string): StrPattern {
  const body = strToJsSource(`${source}$`);
  let regex: RegExp;
  try {
    regex = new RegExp(`^(?:${body})`);
  } catch (err) {
    throw new Error(
      err instanceof Error ? err.message.replace(/^Invalid regular expression: /, '') : String(err),
    );
  }
  return { source, regex };
}
