import { invalidArgument } from "./errors.js";

// C0/C1 control characters (NUL breaks Postgres text; the others break logs and terminals).
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * Checks a short free-text field from a client (request id, feedback source):
 * bounded length, no control characters. Anything else, including SQL-looking
 * text or other scripts, is kept verbatim: it only ever travels as a bound
 * parameter, a protobuf string or a JSON log value.
 */
export function checkTextField(name: string, value: string, maxLength = 128): string {
  if (value.length > maxLength) throw invalidArgument(`${name} is at most ${maxLength} characters`);
  if (CONTROL.test(value)) throw invalidArgument(`${name} must not contain control characters`);
  return value;
}
