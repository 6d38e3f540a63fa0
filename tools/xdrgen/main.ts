import fs from 'fs';
import path from 'path';
import { XdrgenError } from './errors';
import { generateTypeScript } from './generate';

const USAGE = 'usage: xdrgen [--check] <input.x> <output.ts>';

/**
 * Command line: writes the module generated from `input.x` to `output.ts` (only when its content changes),
 * or with --check exits 1 if `output.ts` differs from what would be generated. Paths in the header are
 * relative to `cwd`. Returns the exit code.
 */
export function main(argv: readonly string[], cwd: string = process.cwd()): number {
  const check = argv.includes('--check');
  const files = argv.filter((a) => a !== '--check');
  if (files.length !== 2 || files.some((f) => f.startsWith('-'))) {
    process.stderr.write(USAGE + '\n');
    return 2;
  }
  const [input, output] = files.map((f) => path.resolve(cwd, f));
  const sourceName = path.relative(cwd, input).split(path.sep).join('/');
  let text: string;
  try {
    text = generateTypeScript(fs.readFileSync(input, 'utf8'), { sourceName });
  } catch (e) {
    if (e instanceof XdrgenError) {
      process.stderr.write(`xdrgen: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  const current = fs.existsSync(output) ? fs.readFileSync(output, 'utf8') : null;
  if (check) {
    if (current === text) return 0;
    process.stderr.write(`xdrgen: ${path.relative(cwd, output)} is stale; run npm run generate\n`);
    return 1;
  }
  if (current !== text) {
    const tmp = `${output}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, output);
  }
  return 0;
}

if (require.main === module) {
  process.exitCode = main(process.argv.slice(2));
}
