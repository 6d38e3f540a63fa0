import fs from 'fs';
import path from 'path';
import { XdrgenError } from './errors';
import { generateTypeScript, generateTypeScriptSplit, parseFieldRoles } from './generate';

const USAGE =
  'usage: xdrgen [--check] [--fields <roles.json>] <input.x> <output.ts>\n' +
  '       xdrgen [--check] [--fields <roles.json>] <input.x> <codecs.ts> <calls.ts> <index.ts>';

/** `./name` for a sibling module file `dir/name.ts`. */
function specifier(from: string, file: string): string {
  const rel = path.relative(path.dirname(from), file).split(path.sep).join('/').replace(/\.ts$/, '');
  return rel.startsWith('.') ? rel : `./${rel}`;
}

/**
 * Command line: writes the module generated from `input.x` to `output.ts`, or the split form (codecs, calls
 * importing the codecs, an index re-exporting both) to three files, each only when its content changes. With
 * --check exits 1 if a file differs from what would be generated. `--fields` names the field roles file
 * that drives CALL_FIELDS. Paths in the header are relative to `cwd`. Returns the exit code.
 */
export function main(argv: readonly string[], cwd: string = process.cwd()): number {
  const args = [...argv];
  const check = args.includes('--check');
  const rest = args.filter((a) => a !== '--check');
  let fieldsFile: string | null = null;
  const fi = rest.indexOf('--fields');
  if (fi >= 0) {
    fieldsFile = rest[fi + 1] ?? null;
    rest.splice(fi, 2);
    if (fieldsFile === null || fieldsFile.startsWith('-')) {
      process.stderr.write(USAGE + '\n');
      return 2;
    }
  }
  if ((rest.length !== 2 && rest.length !== 4) || rest.some((f) => f.startsWith('-'))) {
    process.stderr.write(USAGE + '\n');
    return 2;
  }
  const [input, ...outputs] = rest.map((f) => path.resolve(cwd, f));
  const rel = (f: string): string => path.relative(cwd, f).split(path.sep).join('/');
  const sourceName = rel(input);
  const texts = new Map<string, string>();
  try {
    const fieldRolesName = fieldsFile === null ? undefined : rel(path.resolve(cwd, fieldsFile));
    const fieldRoles =
      fieldsFile === null ? undefined : parseFieldRoles(fs.readFileSync(path.resolve(cwd, fieldsFile), 'utf8'), fieldRolesName!);
    const options = { sourceName, fieldRoles, fieldRolesName };
    const source = fs.readFileSync(input, 'utf8');
    if (outputs.length === 1) {
      texts.set(outputs[0], generateTypeScript(source, options));
    } else {
      const [codecs, calls, index] = outputs;
      const out = generateTypeScriptSplit(source, options, { codecs: specifier(calls, codecs), calls: specifier(index, calls) });
      if (specifier(index, codecs) !== specifier(calls, codecs)) {
        process.stderr.write('xdrgen: the split files must be in one folder\n');
        return 2;
      }
      texts.set(codecs, out.codecs).set(calls, out.calls).set(index, out.index);
    }
  } catch (e) {
    if (e instanceof XdrgenError) {
      process.stderr.write(`xdrgen: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  let stale = false;
  for (const [output, text] of texts) {
    const current = fs.existsSync(output) ? fs.readFileSync(output, 'utf8') : null;
    if (check) {
      if (current === text) continue;
      process.stderr.write(`xdrgen: ${rel(output)} is stale; run npm run generate\n`);
      stale = true;
    } else if (current !== text) {
      const tmp = `${output}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, text);
      fs.renameSync(tmp, output);
    }
  }
  return stale ? 1 : 0;
}

if (require.main === module) {
  process.exitCode = main(process.argv.slice(2));
}
