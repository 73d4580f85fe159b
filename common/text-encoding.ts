import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";

let configured = false;

/**
 * Protobuf strings are decoded without dropping a leading U+FEFF, so a client's
 * text (a request id) comes back and is stored exactly as sent.
 */
export function keepByteOrderMarks(): void {
  if (configured) return;
  configured = true;
  const base = getTextEncoding();
  const lenient = new TextDecoder("utf-8", { ignoreBOM: true });
  const strict = new TextDecoder("utf-8", { ignoreBOM: true, fatal: true });
  configureTextEncoding({ ...base, decodeUtf8: (bytes, isStrict) => (isStrict === true ? strict : lenient).decode(bytes) });
}
