/**
 * Where the project's small native addons live (native/<name>, built by
 * `npm run build:native`, part of `npm run build`).
 */
import fs from 'fs';
import path from 'path';

/** The checkout root: the nearest folder up with package.json, skipping dist/ (this file also runs compiled). */
export function packageRoot(): string {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'package.json')) || path.basename(path.dirname(dir)) === 'dist') {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('package root not found');
    dir = up;
  }
  return dir;
}

/** Path of the built addon `name`; it may not exist (not built). */
export function addonFile(name: string): string {
  return path.join(packageRoot(), 'native', name, 'build', 'Release', `${name}.node`);
}
