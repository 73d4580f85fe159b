import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, loadConfig } from "../../common/config.js";

describe("config", () => {
  it("parses defaults into a frozen object", () => {
    const c = loadConfig("all", {});
    assert.equal(c.server.port, 8080);
    assert.equal(c.server.host, "127.0.0.1");
    assert.equal(c.edge.maxImageBytes, 20 * 1024 * 1024);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.edge) && Object.isFrozen(c.edge.coreUrls));
    assert.throws(() => ((c as { role: string }).role = "edge"), TypeError);
  });

  it("chooses the store: memory when nothing durable is asked for, PGlite with DATA_DIR or an outbox, Postgres with DATABASE_URL", () => {
    assert.equal(loadConfig("all", {}).store.kind, "memory");
    assert.equal(loadConfig("all", { DATA_DIR: "/tmp/x" }).store.kind, "pglite");
    assert.equal(loadConfig("all", { KAFKA_BROKERS: "127.0.0.1:9092" }).store.kind, "pglite");
    assert.equal(loadConfig("all", { EMBEDDED_STORE: "pglite" }).store.kind, "pglite");
    assert.equal(loadConfig("core", { DATABASE_URL: "postgres://u@127.0.0.1/db", DATA_DIR: "/tmp/x" }).store.kind, "postgres");
    assert.throws(() => loadConfig("all", { EMBEDDED_STORE: "memory", KAFKA_BROKERS: "127.0.0.1:9092" }), (err: unknown) => err instanceof ConfigError && /EMBEDDED_STORE/.test(err.issues.join("\n")));
  });

  it("fails fast naming every bad key at once", () => {
    try {
      loadConfig("edge", { PORT: "99999", BATCH_MAX_SIZE: "0", LOG_LEVEL: "loud", TLS_CERT_FILE: "/x.pem" });
      assert.fail("expected ConfigError");
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      const text = err.issues.join("\n");
      for (const key of ["PORT", "BATCH_MAX_SIZE", "LOG_LEVEL"]) assert.match(text, new RegExp(key));
    }
    try {
      loadConfig("edge", { TLS_CERT_FILE: "/x.pem", CORE_URLS: "ftp://x" });
      assert.fail("expected ConfigError");
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      const text = err.issues.join("\n");
      assert.match(text, /TLS_CERT_FILE\/TLS_KEY_FILE/);
      assert.match(text, /CORE_URLS: 'ftp:\/\/x'/);
    }
  });

  it("parses the taxonomy settings and names every bad category route", () => {
    const c = loadConfig("core", { CATEGORIZE_TAXONOMY: "/etc/categorize/taxonomy.json", CATEGORIZE_CATEGORY_MIN_SCORE: "0.25", CATEGORIZE_CATEGORY_TOPICS: "animal/bird=birds,vehicle=cars.v1", KAFKA_BROKERS: "127.0.0.1:9092" });
    assert.deepEqual(c.taxonomy, { file: "/etc/categorize/taxonomy.json", minScore: 0.25, topics: { "animal/bird": "birds", vehicle: "cars.v1" } });
    assert.deepEqual(loadConfig("all", {}).taxonomy, { file: undefined, minScore: 0.1, topics: {} });
    assert.throws(
      () => loadConfig("core", { CATEGORIZE_CATEGORY_TOPICS: "animal,food=bad topic,food=ok,food=twice" }),
      (err: unknown) => {
        const all = err instanceof ConfigError ? err.issues.join("\n") : "";
        for (const part of ["'animal' is not", "'food=bad topic' is not", "'food' is mapped twice", "needs KAFKA_BROKERS"]) assert.ok(all.includes(part), `${part} in ${all}`);
        return true;
      },
    );
    assert.throws(() => loadConfig("core", { CATEGORIZE_CATEGORY_MIN_SCORE: "2" }), /CATEGORIZE_CATEGORY_MIN_SCORE/);
  });

  it("takes an admin port on the node's host unless told otherwise, and names a bad one", () => {
    assert.equal(loadConfig("all", {}).server.admin, undefined);
    assert.deepEqual(loadConfig("all", { HOST: "127.0.0.2", ADMIN_PORT: "9464" }).server.admin, { host: "127.0.0.2", port: 9464 });
    assert.deepEqual(loadConfig("all", { ADMIN_PORT: "9464", ADMIN_HOST: "0.0.0.0" }).server.admin, { host: "0.0.0.0", port: 9464 });
    assert.throws(() => loadConfig("all", { ADMIN_PORT: "http" }), /ADMIN_PORT: 'http' is not a port number/);
    assert.throws(() => loadConfig("all", { PORT: "8080", ADMIN_PORT: "8080" }), /ADMIN_PORT: must differ from PORT/);
    assert.throws(() => loadConfig("all", { ADMIN_HOST: "0.0.0.0" }), /ADMIN_HOST: needs ADMIN_PORT/);
  });

  it("requires core URLs on an edge and splits them", () => {
    assert.throws(() => loadConfig("edge", {}), /CORE_URLS/);
    assert.deepEqual(loadConfig("edge", { CORE_URLS: "http://a:1, http://b:2" }).edge.coreUrls, ["http://a:1", "http://b:2"]);
  });

  it("turns tracing on only when an OTEL_* variable asks for OTLP", () => {
    const on = (env: Record<string, string>) => loadConfig("all", env).tracing.enabled;
    assert.equal(on({}), false, "off by default (embedded mode exports nothing)");
    assert.equal(on({ OTEL_TRACES_EXPORTER: "otlp" }), true);
    assert.equal(on({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }), true);
    assert.equal(on({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://collector:4318/v1/traces" }), true);
    assert.equal(on({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_TRACES_EXPORTER: "none" }), false);
    assert.equal(on({ OTEL_TRACES_EXPORTER: "otlp", OTEL_SDK_DISABLED: "true" }), false);
    assert.equal(on({ OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf" }), true);
    try {
      loadConfig("all", { OTEL_TRACES_EXPORTER: "zipkin", OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "grpc", OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" });
      assert.fail("expected ConfigError");
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      const text = err.issues.join("\n");
      for (const key of ["OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_ENDPOINT"]) assert.match(text, new RegExp(`${key}:`));
    }
  });
});

describe("access configuration", () => {
  it("refuses a public edge without credentials and a public core that cannot authenticate edges", () => {
    assert.throws(() => loadConfig("all", { HOST: "0.0.0.0" }), /needs credentials/);
    assert.throws(() => loadConfig("core", { HOST: "0.0.0.0" }), /must authenticate its edges/);
    assert.doesNotThrow(() => loadConfig("core", { HOST: "0.0.0.0", CORE_SHARED_SECRET: "0123456789abcdef0123" }));
    assert.doesNotThrow(() => loadConfig("all", { HOST: "0.0.0.0", AUTH_DISABLED: "true" }));
    const open = loadConfig("all", {});
    assert.equal(open.access.open, true, "embedded on loopback may run open");
    assert.equal(open.access.operatorsOpen, true, "and shows operator data on loopback");
    const podCore = loadConfig("core", { HOST: "0.0.0.0", CORE_SHARED_SECRET: "0123456789abcdef0123" });
    assert.equal(podCore.access.open, true, "edges are authenticated by the secret, not by API keys");
    assert.equal(podCore.access.operatorsOpen, false, "a core on a pod network keeps /metrics off its public port");
  });

  it("stores API keys hashed and names a malformed entry", () => {
    const c = loadConfig("all", { API_KEYS: `app:${"a".repeat(64)}:classify|feedback` });
    assert.deepEqual(c.access.apiKeys, [{ name: "app", tenant: "app", sha256: "a".repeat(64), scopes: ["classify", "feedback"] }], "the three-field form: the key's name is its tenant");
    const t = loadConfig("all", { API_KEYS: `app:team-x:${"b".repeat(64)}:delete` });
    assert.deepEqual(t.access.apiKeys, [{ name: "app", tenant: "team-x", sha256: "b".repeat(64), scopes: ["delete"] }]);
    assert.throws(() => loadConfig("all", { API_KEYS: `app:bad tenant:${"b".repeat(64)}:delete` }), /tenant/);
    assert.equal(loadConfig("all", { JWT_KEY_FILE: "/dev/null" }).access.jwt?.tenantClaim, "tenant");
    assert.throws(() => loadConfig("all", { CACHE_TTL_MS: "5" }), /CACHE_TTL_MS/);
    assert.throws(() => loadConfig("all", { API_KEYS: "app:plaintext-key:classify" }), /API_KEYS/);
    assert.throws(() => loadConfig("all", { API_KEYS: `app:${"a".repeat(64)}:root` }), /unknown scope/);
  });
});
