import { emitTypeScript, EmitOptions } from './emit-ts';
import { parse } from './parser';
import { resolve } from './resolve';

/**
 * `.x` text -> TypeScript module text. `sourceName` is used in error messages and the header.
 * Throws XdrgenError subclasses (XDRGEN_SYNTAX, XDRGEN_SEMANTIC, XDRGEN_EMIT).
 */
export function generateTypeScript(text: string, options: EmitOptions): string {
  return emitTypeScript(resolve(parse(text, options.sourceName)), options);
}
