import { create, toBinary, type DescFile, type DescService, type Registry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { Code } from "../errors.js";

/**
 * gRPC server reflection (v1 and v1alpha) answered from protobuf-es
 * descriptors, so grpcurl and buf curl work without .proto files.
 * Files are sent with their transitive dependencies, each once per stream.
 */
export function registerReflectionService(router: ConnectRouter, registry: Registry, services: readonly DescService[]): void {
  const serviceNames = services.map((s) => s.typeName);
  const fileByName = new Map<string, DescFile>();
  for (const s of services) collectFiles(s.file, fileByName);
  const encoded = new Map<string, Uint8Array>();
  const encode = (f: DescFile) => {
    let bytes = encoded.get(f.name);
    if (bytes === undefined) {
      bytes = toBinary(FileDescriptorProtoSchema, f.proto);
      encoded.set(f.name, bytes);
    }
    return bytes;
  };

  const fileContainingSymbol = (symbol: string): DescFile | undefined => {
    const direct = registry.get(symbol);
    if (direct !== undefined && "file" in direct) return direct.file;
    // A method or enum value: its parent carries the file.
    const dot = symbol.lastIndexOf(".");
    if (dot > 0) {
      const parent = registry.get(symbol.slice(0, dot));
      if (parent?.kind === "service" && parent.methods.some((m) => m.name === symbol.slice(dot + 1))) return parent.file;
    }
    return undefined;
  };

  type Answer =
    | { case: "fileDescriptorResponse"; files: Uint8Array[] }
    | { case: "listServicesResponse"; names: string[] }
    | { case: "allExtensionNumbersResponse"; baseTypeName: string; numbers: number[] }
    | { case: "errorResponse"; code: Code; message: string };

  function answer(req: v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest, sent: Set<string>): Answer {
    const withDeps = (file: DescFile | undefined, what: string): Answer => {
      if (file === undefined) return { case: "errorResponse", code: Code.NotFound, message: `${what} not found` };
      const all = new Map<string, DescFile>();
      collectFiles(file, all);
      const out: Uint8Array[] = [];
      for (const f of all.values()) {
        // The requested file always goes out; its dependencies only once per stream.
        if (f === file || !sent.has(f.name)) {
          out.push(encode(f));
          sent.add(f.name);
        }
      }
      return { case: "fileDescriptorResponse", files: out };
    };
    const r = req.messageRequest;
    switch (r.case) {
      case "listServices":
        return { case: "listServicesResponse", names: serviceNames };
      case "fileByFilename":
        return withDeps(fileByName.get(r.value) ?? findFile(registry, r.value), `file ${r.value}`);
      case "fileContainingSymbol":
        return withDeps(fileContainingSymbol(r.value), `symbol ${r.value}`);
      case "fileContainingExtension": {
        const what = `extension ${r.value.containingType}(${r.value.extensionNumber})`;
        const msg = registry.getMessage(r.value.containingType);
        return withDeps(msg === undefined ? undefined : registry.getExtensionFor(msg, r.value.extensionNumber)?.file, what);
      }
      case "allExtensionNumbersOfType": {
        const msg = registry.getMessage(r.value);
        if (msg === undefined) return { case: "errorResponse", code: Code.NotFound, message: `type ${r.value} not found` };
        const numbers: number[] = [];
        for (const t of registry) if (t.kind === "extension" && t.extendee.typeName === r.value) numbers.push(t.number);
        return { case: "allExtensionNumbersResponse", baseTypeName: r.value, numbers };
      }
      default:
        return { case: "errorResponse", code: Code.InvalidArgument, message: "empty reflection request" };
    }
  }

  // v1alpha is v1 under another package name: same fields, same numbers.
  for (const mod of [v1, v1alpha as unknown as typeof v1]) {
    router.service(mod.ServerReflection, {
      async *serverReflectionInfo(requests) {
        const sent = new Set<string>();
        for await (const req of requests) {
          yield create(mod.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse: toResponse(mod, answer(req, sent)) });
        }
      },
    });
  }

  function toResponse(m: typeof v1, a: Answer): v1.ServerReflectionResponse["messageResponse"] {
    switch (a.case) {
      case "fileDescriptorResponse":
        return { case: a.case, value: create(m.FileDescriptorResponseSchema, { fileDescriptorProto: a.files }) };
      case "listServicesResponse":
        return { case: a.case, value: create(m.ListServiceResponseSchema, { service: a.names.map((name) => create(m.ServiceResponseSchema, { name })) }) };
      case "allExtensionNumbersResponse":
        return { case: a.case, value: create(m.ExtensionNumberResponseSchema, { baseTypeName: a.baseTypeName, extensionNumber: a.numbers }) };
      case "errorResponse":
        return { case: a.case, value: create(m.ErrorResponseSchema, { errorCode: a.code, errorMessage: a.message }) };
    }
  }
}

function collectFiles(file: DescFile, into: Map<string, DescFile>): void {
  if (into.has(file.proto.name)) return;
  for (const dep of file.dependencies) collectFiles(dep, into);
  into.set(file.proto.name, file);
}

function findFile(registry: Registry, name: string): DescFile | undefined {
  for (const t of registry) if ("file" in t && t.file.proto.name === name) return t.file;
  return undefined;
}
