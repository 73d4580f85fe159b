import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { RunningNode } from "../../cli/start-node.js";
import { catalogDir } from "../../core/model-manifest.js";
import { categorizeClient } from "../support/clients.js";
import { modelPath, readImage, sharedDir } from "../support/fixtures.js";
import { makeVariants } from "../support/image-variants.js";
import { startTestNode } from "../support/nodes.js";
import { closeAll } from "../support/teardown.js";

describe("a new model version swapped in while serving", () => {
  let dir: string;
  let node: RunningNode;
  const manifestPath = () => join(dir, "model.json");
  const writeManifest = async (version: string) => {
    const m = JSON.parse(await readFile(join(catalogDir, "mobilenetv2-12-int8.json"), "utf8")) as Record<string, unknown>;
    await writeFile(manifestPath(), JSON.stringify({ ...m, version }));
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "categorize-swap-"));
    await symlink(modelPath, join(dir, "mobilenetv2-12-int8.onnx"));
    await symlink(join(sharedDir, "models", "imagenet_labels.txt"), join(dir, "imagenet_labels.txt"));
    await writeManifest("1.0.0");
    // The delay holds requests in the batcher even while the model is idle, so some are in flight during the swap.
    node = await startTestNode("all", { CATEGORIZE_MODEL: manifestPath(), BATCH_MAX_DELAY_MS: "100", BATCH_DISPATCH_WHEN_IDLE: "false", BATCH_MAX_SIZE: "16", CACHE_MAX_ENTRIES: "0" });
  });
  after(() =>
    closeAll(
      () => node?.stop(),
      () => rm(dir, { recursive: true, force: true }),
    ),
  );

  it("finishes in-flight requests on the old version, answers new ones with the new version, keys results by version", async () => {
    const client = categorizeClient(node.url);
    const eagle = readImage("bald_eagle.jpeg");
    const before = await client.classify({ image: eagle });
    assert.equal(before.model?.version, "1.0.0");
    assert.equal(await node.core!.reloadModel(), false, "an unchanged model is not swapped");

    const images = await makeVariants(6, { width: 320 });
    const inFlight = Promise.all(images.map((image) => client.classify({ image })));
    while (node.core!.classifier.batcher.depth() < 6) await new Promise((r) => setTimeout(r, 5));
    await writeManifest("1.0.1");
    assert.equal(await node.core!.reloadModel(), true);
    const old = await inFlight;
    assert.ok(old.every((r) => r.model?.version === "1.0.0" && r.labels.length === 5), "in-flight requests finished on the old version");

    const after = await client.classify({ image: eagle });
    assert.equal(after.model?.version, "1.0.1");
    assert.equal(after.cached, false, "a new version answers anew: results are keyed by model version");
    assert.deepEqual(after.labels.map((l) => l.index), before.labels.map((l) => l.index));
    const again = await client.classify({ image: eagle });
    assert.equal(again.cached, true);
    const metrics = await (await fetch(`${node.url}/metrics`)).text();
    assert.match(metrics, /categorize_model_info\{[^}]*version="1\.0\.1"/);
    assert.doesNotMatch(metrics, /categorize_model_info\{[^}]*version="1\.0\.0"/);
  });
});
