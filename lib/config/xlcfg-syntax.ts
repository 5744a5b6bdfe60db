/**
 * The xl.cfg(5) file syntax, as libxlutil's lexer and grammar read it: `KEY = VALUE`
 * (or `KEY += VALUE`) ended by a newline or `;`; a VALUE is a string in '' or "" (with
 * backslash escapes), a number, or a list `[ … ]` that may span lines, nest, and end
 * with a trailing comma; `#` starts a comment. Values keep their text: xl decides per key
 * whether it wants a string, a number or a list.
 */

/** One parsed value, with the line it starts on. */
export type XlValue =
  | { kind: 'string'; text: string; line: number }
  | { kind: 'number'; text: string; line: number }
  | { kind: 'list'; items: XlValue[]; line: number };

/** One `KEY = VALUE` setting; a later setting of the same key replaces an earlier one. */
export interface XlSetting {
  key: string;
  value: XlValue;
  line: number;
}

/** A syntax fault: the line and what was wrong, turned into XEN_INVALID_CONFIG by the caller. */
export class XlSyntaxFault {
  constructor(
    readonly line: number,
    readonly reason: string,
  ) {}
}

type Token =
  | { t: 'ident' | 'string' | 'number'; text: string; line: number }
  | { t: '=' | '+=' | '[' | ']' | ',' | ';' | 'nl' | 'eof'; text: string; line: number };

const ESCAPES: Record<string, string> = { n: '\n', t: '\t', r: '\r', '\\': '\\', "'": "'", '"': '"', a: '\x07', b: '\b', f: '\f', v: '\v' };

function lex(text: string): Token[] {
  const out: Token[] = [];
  let line = 1;
  let i = 0;
  while (i < text.length) {
    const ch = text[i] as string;
    if (ch === '\n') {
      out.push({ t: 'nl', text: ch, line });
      line++;
      i++;
    } else if (ch === ' ' || ch === '\t' || ch === '\r') {
      i++;
    } else if (ch === '#') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (/[a-z]/.test(ch)) {
      // libxlutil's lexer: keys are lower-case letters, digits, `_` and `.`.
      const m = /^[a-z][a-z0-9_.]*/.exec(text.slice(i)) as RegExpExecArray;
      out.push({ t: 'ident', text: m[0], line });
      i += m[0].length;
    } else if (/[0-9]/.test(ch)) {
      // A number token is a digit and then lower-case letters and digits (`0x1f`, `0777`);
      // whether it is a valid number is the key's business, as in xl.
      const m = /^[0-9][0-9a-z]*/.exec(text.slice(i)) as RegExpExecArray;
      out.push({ t: 'number', text: m[0], line });
      i += m[0].length;
    } else if (ch === '"' || ch === "'") {
      let s = '';
      let j = i + 1;
      for (;;) {
        const c = text[j];
        if (c === undefined || c === '\n') throw new XlSyntaxFault(line, `unterminated string starting ${text.slice(i, i + 20)}`);
        if (c === ch) break;
        if (c === '\\') {
          const e = text[j + 1] ?? '';
          // libxlutil 4.17 also has \x and octal escapes, but mishandles them (it refuses
          // every \x form and turns "\101" into nothing), so they are refused here.
          if (!(e in ESCAPES)) throw new XlSyntaxFault(line, `unsupported escape \\${e} in string (use \\n \\t \\r \\\\ \\' \\")`);
          s += ESCAPES[e];
          j += 2;
          continue;
        }
        s += c;
        j++;
      }
      out.push({ t: 'string', text: s, line });
      i = j + 1;
    } else if (ch === '+' && text[i + 1] === '=') {
      out.push({ t: '+=', text: '+=', line });
      i += 2;
    } else if ('=[],;'.includes(ch)) {
      out.push({ t: ch as '=' | '[' | ']' | ',' | ';', text: ch, line });
      i++;
    } else {
      throw new XlSyntaxFault(line, `unexpected character "${ch}"`);
    }
  }
  out.push({ t: 'eof', text: '', line });
  return out;
}

/** Reads xl.cfg text into its settings, in file order. Throws {@link XlSyntaxFault}. */
export function parseXlSyntax(text: string): XlSetting[] {
  const toks = lex(text);
  let p = 0;
  const peek = () => toks[p] as Token;
  const next = () => toks[p++] as Token;
  const skipNewlines = () => {
    while (peek().t === 'nl') p++;
  };
  const describe = (t: Token) => (t.t === 'nl' ? 'end of line' : t.t === 'eof' ? 'end of file' : `"${t.text}"`);

  function value(): XlValue {
    const t = next();
    if (t.t === 'string' || t.t === 'number') return { kind: t.t, text: t.text, line: t.line };
    if (t.t !== '[') throw new XlSyntaxFault(t.line, `expected a value, got ${describe(t)}`);
    const items: XlValue[] = [];
    skipNewlines();
    while (peek().t !== ']') {
      items.push(value());
      skipNewlines();
      const sep = peek();
      if (sep.t === ',') {
        p++;
        skipNewlines();
      } else if (sep.t !== ']') {
        throw new XlSyntaxFault(sep.line, `expected "," or "]" in the list, got ${describe(sep)}`);
      }
    }
    p++;
    return { kind: 'list', items, line: t.line };
  }

  const settings: XlSetting[] = [];
  for (;;) {
    while (peek().t === 'nl' || peek().t === ';') p++;
    const key = next();
    if (key.t === 'eof') return settings;
    if (key.t !== 'ident') throw new XlSyntaxFault(key.line, `expected KEY = VALUE, got ${describe(key)}`);
    const op = next();
    if (op.t !== '=' && op.t !== '+=') throw new XlSyntaxFault(op.line, `${key.text}: expected "=" after the key, got ${describe(op)}`);
    const v = value();
    const end = next();
    if (end.t !== 'nl' && end.t !== ';' && end.t !== 'eof') throw new XlSyntaxFault(end.line, `${key.text}: expected the end of the line after the value, got ${describe(end)}`);
    if (end.t === 'eof') p--;
    const earlier = settings.findIndex((s) => s.key === key.text);
    if (op.t === '+=' && earlier >= 0) {
      const old = (settings[earlier] as XlSetting).value;
      if (old.kind === 'list' && v.kind === 'list') old.items.push(...v.items);
      else if (old.kind !== 'list' && v.kind !== 'list') old.text += v.text;
      else throw new XlSyntaxFault(key.line, `${key.text}: += mixes a list and a single value`);
      continue;
    }
    if (earlier >= 0) settings.splice(earlier, 1);
    settings.push({ key: key.text, value: v, line: key.line });
  }
}

/** Quotes a string for xl.cfg: double quotes, backslash escapes for what needs them. */
export function quoteXl(s: string): string {
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`).replace(/\n/g, '\\n').replace(/\t/g, '\\t').replace(/\r/g, '\\r')}"`;
}
