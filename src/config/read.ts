import fs from 'fs';
import { ConfigIoError } from './errors';

/** Config files are small; anything larger is a mistake (wrong path, binary). */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

/** Read a config file as UTF-8 text, without a leading BOM. */
export function readConfigText(file: string): string {
  let buf: Buffer;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new ConfigIoError(file, 'not a regular file');
    if (st.size > MAX_CONFIG_FILE_BYTES) {
      throw new ConfigIoError(file, `larger than ${MAX_CONFIG_FILE_BYTES} bytes`);
    }
    buf = fs.readFileSync(file);
  } catch (err) {
    if (err instanceof ConfigIoError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigIoError(file, `cannot read: ${code ?? String(err)}`, err);
  }
  const text = buf.toString('utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}
