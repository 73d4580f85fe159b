import { Code, ConnectError } from "@connectrpc/connect";

export { Code };

/**
 * The one error type of the domain: a gRPC status code, a message that is
 * safe to show to the caller, and whether trying again may succeed.
 * Transports turn it into their status; anything else that is thrown becomes
 * INTERNAL through {@link toConnectError}.
 */
export class CategorizeError extends Error {
  readonly code: Code;
  readonly retryable: boolean;

  constructor(code: Code, message: string, options: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "CategorizeError";
    this.code = code;
    this.retryable = options.retryable ?? defaultRetryable(code);
  }
}

function defaultRetryable(code: Code): boolean {
  return code === Code.Unavailable || code === Code.ResourceExhausted || code === Code.Aborted;
}

export const invalidArgument = (message: string, cause?: unknown) => new CategorizeError(Code.InvalidArgument, message, { cause });
export const resourceExhausted = (message: string) => new CategorizeError(Code.ResourceExhausted, message);
export const unavailable = (message: string, cause?: unknown) => new CategorizeError(Code.Unavailable, message, { cause });
export const notFound = (message: string) => new CategorizeError(Code.NotFound, message);
export const deadlineExceeded = (message: string) => new CategorizeError(Code.DeadlineExceeded, message);

/** Normalizes anything thrown into a CategorizeError; unknown throws become INTERNAL with a safe message. */
export function toCategorizeError(err: unknown): CategorizeError {
  if (err instanceof CategorizeError) return err;
  if (err instanceof ConnectError) {
    if (err.code === Code.Internal && /Premature close/.test(err.rawMessage)) return new CategorizeError(Code.Canceled, "the client went away", { cause: err });
    return new CategorizeError(err.code, err.rawMessage, { cause: err, retryable: defaultRetryable(err.code) });
  }
  if (err instanceof Error && ((err as { code?: string }).code === "ERR_STREAM_PREMATURE_CLOSE" || err.message === "Premature close")) {
    return new CategorizeError(Code.Canceled, "the client went away", { cause: err });
  }
  if (err instanceof Error && err.name === "TimeoutError") {
    return new CategorizeError(Code.DeadlineExceeded, "deadline exceeded", { cause: err });
  }
  if (err instanceof Error && err.name === "AbortError") {
    const reason: unknown = (err as Error & { cause?: unknown }).cause;
    if (reason instanceof CategorizeError) return reason;
    return new CategorizeError(Code.Canceled, "request cancelled", { cause: err });
  }
  return new CategorizeError(Code.Internal, "internal error", { cause: err, retryable: false });
}

/** Converts any error into the ConnectError a handler throws. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  const e = toCategorizeError(err);
  return new ConnectError(e.message, e.code, undefined, undefined, e);
}

/** Name of a gRPC code as used in metrics and logs (OK, INVALID_ARGUMENT, ...). */
export function codeName(code: Code | 0): string {
  if (code === 0) return "OK";
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}
