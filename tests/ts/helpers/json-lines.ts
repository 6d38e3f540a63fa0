import * as fs from 'fs';

/**
 * The JSON objects of the complete lines of `text`. A reader that polls a
 * file or a stream while the daemon appends to it can see the last line half
 * written (a read(2) of a regular file is not atomic against a concurrent
 * write(2)), so only the text up to the last newline counts.
 */
export function jsonLines<T = Record<string, unknown>>(text: string, keep: (line: string) => boolean = (l) => l !== ''): T[] {
  return text
    .slice(0, text.lastIndexOf('\n') + 1)
    .split('\n')
    .filter((l) => l !== '' && keep(l))
    .map((l) => JSON.parse(l) as T);
}

/** jsonLines of a file that may not exist yet (an audit file before its first event). */
export function readJsonLines<T = Record<string, unknown>>(file: string): T[] {
  return fs.existsSync(file) ? jsonLines<T>(fs.readFileSync(file, 'utf8')) : [];
}
