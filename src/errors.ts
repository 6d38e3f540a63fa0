/**
 * Base of every error the daemon raises on purpose. `code` is stable: callers
 * and tests branch on it, never on the message. Messages name what failed,
 * never secrets (PINs, key bytes).
 */
export abstract class ProxyError extends Error {
  abstract readonly code: string;

  constructor(message?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}
