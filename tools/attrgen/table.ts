import { AttrgenSyntaxError } from './errors';

/** Value shapes of rpc/attributes.table, in the order the generated enums number them (from 1). */
export const SHAPES = ['ulong', 'bool', 'bytes', 'date', 'ulongs', 'template'] as const;
export type Shape = (typeof SHAPES)[number];

export interface AttributeEntry {
  readonly name: string;
  readonly type: number;
  readonly shape: Shape;
  /** 1-based line of the entry in the table. */
  readonly line: number;
}

const NAME = /^CKA_[A-Z0-9_]+$/;
/** C integer literals as the PKCS#11 headers write attribute types; at most 32 bits (CKA_VENDOR_DEFINED). */
const VALUE = /^(0x[0-9a-fA-F]{1,8}|[0-9]{1,10})$/;

/**
 * Parses the table: `NAME VALUE SHAPE` per line, `#` starts a comment. Names and values are unique.
 * Entries come back sorted by type.
 */
export function parseTable(text: string, file: string): AttributeEntry[] {
  const entries: AttributeEntry[] = [];
  const byName = new Map<string, number>();
  const byType = new Map<number, number>();
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    const content = raw.replace(/#.*$/, '');
    const fields: Array<{ text: string; column: number }> = [];
    for (const m of content.matchAll(/\S+/g)) fields.push({ text: m[0], column: (m.index ?? 0) + 1 });
    if (fields.length === 0) return;
    const fail = (column: number, detail: string): never => {
      throw new AttrgenSyntaxError(file, line, column, detail);
    };
    if (fields.length !== 3) fail(fields[0].column, `expected NAME VALUE SHAPE, got ${fields.length} fields`);
    const [name, value, shape] = fields;
    if (!NAME.test(name.text)) fail(name.column, `'${name.text}' is not a CKA_ name`);
    if (!VALUE.test(value.text)) fail(value.column, `'${value.text}' is not an attribute type literal`);
    const type = Number(value.text);
    if (type > 0xffffffff) fail(value.column, `${value.text} does not fit 32 bits`);
    if (!(SHAPES as readonly string[]).includes(shape.text)) {
      fail(shape.column, `unknown shape '${shape.text}' (one of ${SHAPES.join(', ')})`);
    }
    const prevName = byName.get(name.text);
    if (prevName !== undefined) fail(name.column, `${name.text} already defined on line ${prevName}`);
    const prevType = byType.get(type);
    if (prevType !== undefined) fail(value.column, `${value.text} already defined on line ${prevType}`);
    byName.set(name.text, line);
    byType.set(type, line);
    entries.push({ name: name.text, type, shape: shape.text as Shape, line });
  });
  return entries.sort((a, b) => a.type - b.type);
}
