/** Base class of every failure of attrgen; `code` is stable, tests check it. */
export abstract class AttrgenError extends Error {
  abstract readonly code: string;
}

/** A table line that does not parse, or that contradicts another line (duplicate name or value). */
export class AttrgenSyntaxError extends AttrgenError {
  readonly code = 'ATTRGEN_SYNTAX';
  constructor(
    readonly file: string,
    readonly line: number,
    readonly column: number,
    readonly detail: string,
  ) {
    super(`${file}:${line}:${column}: ${detail}`);
    this.name = 'AttrgenSyntaxError';
  }
}
