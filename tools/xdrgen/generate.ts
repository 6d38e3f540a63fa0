import { emitTypeScript, emitTypeScriptSplit, EmitOptions, FieldRoles, FieldRoleSpec, SplitModules, SplitOutput } from './emit-ts';
import { XdrgenEmitError } from './errors';
import { parse } from './parser';
import { resolve } from './resolve';

/**
 * `.x` text -> TypeScript module text. `sourceName` is used in error messages and the header.
 * Throws XdrgenError subclasses (XDRGEN_SYNTAX, XDRGEN_SEMANTIC, XDRGEN_EMIT).
 */
export function generateTypeScript(text: string, options: EmitOptions): string {
  return emitTypeScript(resolve(parse(text, options.sourceName)), options);
}

/** `.x` text -> codecs, calls and index modules (see emitTypeScriptSplit). */
export function generateTypeScriptSplit(text: string, options: EmitOptions, modules: SplitModules): SplitOutput {
  return emitTypeScriptSplit(resolve(parse(text, options.sourceName)), options, modules);
}

/**
 * Parses a field roles file: a JSON object from type name to `{ role, invalidRv?, invalidRvName?,
 * zeroAllowed? }`; keys starting with `$` are comments. Throws XdrgenEmitError naming the file.
 */
export function parseFieldRoles(text: string, fileName: string): FieldRoles {
  const bad = (detail: string): never => {
    throw new XdrgenEmitError(fileName, null, detail);
  };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return bad(`not JSON: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return bad('expected an object of type name -> role');
  const roles = new Map<string, FieldRoleSpec>();
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name.startsWith('$')) continue;
    if (typeof v !== 'object' || v === null || typeof (v as { role?: unknown }).role !== 'string') {
      return bad(`'${name}': expected { "role": ... }`);
    }
    for (const k of Object.keys(v)) {
      if (!['role', 'invalidRv', 'invalidRvName', 'zeroAllowed'].includes(k)) bad(`'${name}': unknown key '${k}'`);
    }
    roles.set(name, v as FieldRoleSpec);
  }
  return roles;
}
