/**
 * constgen: pkcs11.h -> src/generated/pkcs11-constants.ts.
 *
 *   node dist/tools/constgen/main.js [--check] HEADER EXTRAS OUT
 *
 * EXTRAS holds `#define` lines for constants of PKCS#11 3.0 that the
 * installed 2.40 header lacks (spec values). With --check, OUT is compared
 * with a fresh generation and nothing is written (exit 1 when stale).
 */
import fs from 'fs';
import path from 'path';
import { ConstgenError, emit, parseHeader } from './generate';

export function main(argv: string[], cwd: string = process.cwd()): number {
  const check = argv[0] === '--check';
  const args = check ? argv.slice(1) : argv;
  if (args.length !== 3) {
    process.stderr.write('usage: constgen [--check] HEADER EXTRAS OUT\n');
    return 2;
  }
  const [header, extras, out] = args.map((a) => path.resolve(cwd, a));
  const rel = (p: string): string => path.relative(cwd, p);
  try {
    const text = emit(
      parseHeader(fs.readFileSync(header, 'utf8'), header),
      header,
      parseHeader(fs.readFileSync(extras, 'utf8'), rel(extras)),
      rel(extras),
    );
    if (check) {
      const current = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
      if (current !== text) {
        process.stderr.write(`constgen: ${rel(out)} is stale; run npm run generate:constants\n`);
        return 1;
      }
      return 0;
    }
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, text);
    return 0;
  } catch (e) {
    if (e instanceof ConstgenError || (e as NodeJS.ErrnoException).code !== undefined) {
      process.stderr.write(`constgen: ${e instanceof Error ? e.message : String(e)}\n`);
      return 1;
    }
    throw e;
  }
}

if (require.main === module) process.exit(main(process.argv.slice(2)));
