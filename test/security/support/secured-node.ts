import { createHash, randomBytes } from "node:crypto";
import { spawnNode, type NodeProcess } from "../../support/nodes.js";
import type { Credentials } from "./fuzz-run.js";
import { isolatedEnv } from "./proc.js";

/**
 * An embedded node (edge + core) in a child process, configured as in
 * production: API keys required on CategorizeService, a shared secret on
 * InferenceService, /readyz and /metrics on a separate admin port. The credentials are made fresh for every run and only
 * their hashes go into the node's environment.
 */
export async function spawnSecuredNode(extra: Record<string, string | undefined> = {}): Promise<{ node: NodeProcess; credentials: Credentials }> {
  const key = () => randomBytes(24).toString("base64url");
  const credentials: Credentials = { apiKey: key(), readOnlyKey: key(), feedbackOnlyKey: key(), coreSecret: key() };
  const hash = (k: string) => createHash("sha256").update(k).digest("hex");
  const apiKeys = [
    `fuzz:${hash(credentials.apiKey)}:classify|read-results|feedback`,
    `reader:${hash(credentials.readOnlyKey)}:read-results`,
    `reviewer:${hash(credentials.feedbackOnlyKey)}:feedback`,
  ].join(",");
  const node = await spawnNode("all", isolatedEnv({ API_KEYS: apiKeys, CORE_SHARED_SECRET: credentials.coreSecret, ADMIN_PORT: "0", ...extra }));
  return { node, credentials };
}
