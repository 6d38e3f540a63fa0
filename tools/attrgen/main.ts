import fs from 'fs';
import path from 'path';
import { emitC, emitTypeScript } from './emit';
import { AttrgenError } from './errors';
import { parseTable } from './table';

const USAGE = 'usage: attrgen [--check] <attributes.table> <output.ts> <output.h>';

function writeIfChanged(file: string, text: string): void {
  if (fs.existsSync(file) && fs.readFileSync(file, 'utf8') === text) return;
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/**
 * Command line: writes the TypeScript module and the C header generated from the table (only when their
 * content changes), or with --check exits 1 if either differs from what would be generated. Paths in the
 * headers are relative to `cwd`. Returns the exit code.
 */
export function main(argv: readonly string[], cwd: string = process.cwd()): number {
  const check = argv.includes('--check');
  const files = argv.filter((a) => a !== '--check');
  if (files.length !== 3 || files.some((f) => f.startsWith('-'))) {
    process.stderr.write(USAGE + '\n');
    return 2;
  }
  const [input, outTs, outC] = files.map((f) => path.resolve(cwd, f));
  const sourceName = path.relative(cwd, input).split(path.sep).join('/');
  let outputs: Array<[string, string]>;
  try {
    const entries = parseTable(fs.readFileSync(input, 'utf8'), sourceName);
    outputs = [
      [outTs, emitTypeScript(entries, sourceName)],
      [outC, emitC(entries, sourceName)],
    ];
  } catch (e) {
    if (e instanceof AttrgenError) {
      process.stderr.write(`attrgen: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  if (check) {
    const stale = outputs.filter(([f, text]) => !fs.existsSync(f) || fs.readFileSync(f, 'utf8') !== text);
    for (const [f] of stale) process.stderr.write(`attrgen: ${path.relative(cwd, f)} is stale; run npm run generate\n`);
    return stale.length === 0 ? 0 : 1;
  }
  for (const [f, text] of outputs) writeIfChanged(f, text);
  return 0;
}

if (require.main === module) {
  process.exitCode = main(process.argv.slice(2));
}
