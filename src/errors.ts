// Errors with stable codes (STYLE §F). `CliError` (and `StartError`) are the ones the CLI turns into
// `iodine: <message>` on stderr and exit code 2, with no stack and no usage dump.

/** An error raised by misuse of the iodine API, with a stable `code`. */
export class IodineError extends Error {
  override name = "IodineError";
  readonly code: string;
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/**
 * A listener could not bind its address (not an address of this host, a hostname that does not
 * resolve, a port in use): `Iodine.start()` rejects with it; the CLI exits with code 2.
 */
export class ListenError extends IodineError {
  override name = "ListenError";
  constructor(message: string, options?: ErrorOptions) {
    super("ELISTEN", message, options);
  }
}

/** A bad command line, environment value or app module: one line on stderr, exit code 2. */
export class CliError extends Error {
  override name = "CliError";
  readonly exitCode = 2;
}

/** A worker could not start when the cluster started (the message is its own report): exit code 2. */
export class StartError extends Error {
  override name = "StartError";
}
