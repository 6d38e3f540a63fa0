/** Position of a token in a `.x` file; both 1-based, a tab counts as one column. */
export interface SourcePos {
  readonly line: number;
  readonly column: number;
}

/** Base class of every failure of the generator; `code` is stable, tests check it. */
export abstract class XdrgenError extends Error {
  abstract readonly code: string;
}

/** A `.x` file that is not a valid XDR/RPC language text, or that uses something xdrgen does not handle. */
export class XdrgenSyntaxError extends XdrgenError {
  readonly code = 'XDRGEN_SYNTAX';
  constructor(
    readonly file: string,
    readonly pos: SourcePos,
    readonly detail: string,
  ) {
    super(`${file}:${pos.line}:${pos.column}: ${detail}`);
    this.name = 'XdrgenSyntaxError';
  }
}

/** A well-formed `.x` file whose definitions do not fit together (unknown names, duplicates, bad bounds). */
export class XdrgenSemanticError extends XdrgenError {
  readonly code = 'XDRGEN_SEMANTIC';
  constructor(
    readonly file: string,
    readonly pos: SourcePos,
    readonly detail: string,
  ) {
    super(`${file}:${pos.line}:${pos.column}: ${detail}`);
    this.name = 'XdrgenSemanticError';
  }
}

/** A valid specification that the TypeScript emitter cannot turn into code (name clashes, missing `rv`). */
export class XdrgenEmitError extends XdrgenError {
  readonly code = 'XDRGEN_EMIT';
  constructor(
    readonly file: string,
    readonly pos: SourcePos | null,
    readonly detail: string,
  ) {
    super(pos ? `${file}:${pos.line}:${pos.column}: ${detail}` : `${file}: ${detail}`);
    this.name = 'XdrgenEmitError';
  }
}
