import { spawnSync } from 'node:child_process';

export interface ToolResult {
  status: number | null;
  out: string;
}

/** Runs pkcs11-tool with a module and environment; stdout and stderr merged. Bounded by a timeout. */
export function pkcs11Tool(module: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): ToolResult {
  const r = spawnSync('pkcs11-tool', ['--module', module, ...args], { env, encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}
