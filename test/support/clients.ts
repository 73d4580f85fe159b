import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { CategorizeService } from "../../gen/categorize/v1/categorize_pb.js";
import { InferenceService } from "../../gen/categorize/v1/inference_pb.js";

export type Protocol = "grpc" | "grpc-web" | "connect-h1" | "connect-h2";

/** A CategorizeService client over the given protocol. */
export function categorizeClient(url: string, protocol: Protocol = "grpc"): Client<typeof CategorizeService> {
  return createClient(CategorizeService, transport(url, protocol));
}

export function inferenceClient(url: string): Client<typeof InferenceService> {
  return createClient(InferenceService, transport(url, "grpc"));
}

export function transport(url: string, protocol: Protocol) {
  switch (protocol) {
    case "grpc":
      return createGrpcTransport({ baseUrl: url, readMaxBytes: 64 << 20 });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1" });
    case "connect-h1":
      return createConnectTransport({ baseUrl: url, httpVersion: "1.1" });
    case "connect-h2":
      return createConnectTransport({ baseUrl: url, httpVersion: "2" });
  }
}
