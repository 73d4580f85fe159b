import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { createLocalJWKSet, importSPKI, jwtVerify, type CryptoKey, type JWTVerifyGetKey } from "jose";
import { LRUCache } from "lru-cache";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "../logger.js";
import { adminKey, DEFAULT_TENANT, isTenantName, tenantKey } from "../tenant.js";

/** What a caller may do. */
export type Scope = "classify" | "read-results" | "feedback" | "delete" | "admin";

/** Which scope each public method needs; methods not listed are internal or public (health, reflection). */
export const METHOD_SCOPES: Readonly<Record<string, Scope>> = {
  "categorize.v1.CategorizeService/Classify": "classify",
  "categorize.v1.CategorizeService/ClassifyUpload": "classify",
  "categorize.v1.CategorizeService/ClassifyStream": "classify",
  "categorize.v1.CategorizeService/ClassifyAsync": "classify",
  "categorize.v1.CategorizeService/ClassifyAsyncBulk": "classify",
  "categorize.v1.CategorizeService/GetResult": "read-results",
  "categorize.v1.CategorizeService/ListCategories": "read-results",
  "categorize.v1.CategorizeService/GetQuality": "read-results",
  "categorize.v1.CategorizeService/SubmitFeedback": "feedback",
  "categorize.v1.CategorizeService/DeleteImage": "delete",
};

const INTERNAL_SERVICE = "categorize.v1.InferenceService";
/** Metadata header carrying the edge -> core shared secret. */
export const INTERNAL_SECRET_HEADER = "x-categorize-internal";

/** One API key as configured: only its sha256 is kept, never the key. */
export interface ApiKey {
  readonly name: string;
  /** The tenant whose images the key sees (the key's name in the three-field form). */
  readonly tenant: string;
  readonly sha256: string;
  readonly scopes: readonly Scope[];
}

export interface AccessConfig {
  /** No keys and no JWT: every caller is allowed (embedded mode on loopback only). */
  readonly open: boolean;
  /**
   * Operator data (/metrics, readiness details) on the public port needs no
   * credentials: access is open and the node listens on loopback (or runs
   * behind a trusted gateway with AUTH_DISABLED). A core on a pod network
   * with only the edge secret is open to its edges, not to everyone.
   */
  readonly operatorsOpen: boolean;
  readonly apiKeys: readonly ApiKey[];
  readonly jwt:
    | {
        readonly keyFile: string;
        readonly issuer: string | undefined;
        readonly audience: string | undefined;
        /** The claim naming the caller's tenant; a token without it is refused. */
        readonly tenantClaim: string;
      }
    | undefined;
  /** Required on InferenceService calls when set. */
  readonly internalSecret: string | undefined;
  readonly rate: { readonly perSecond: number; readonly burst: number; readonly concurrency: number };
  /** Browser origins allowed by CORS (the page served by the edge itself needs none). */
  readonly corsOrigins: readonly string[];
}

/** The authenticated caller of one request. */
export interface Caller {
  readonly id: string;
  readonly tenant: string;
  readonly scopes: ReadonlySet<Scope>;
}

const SCOPES: readonly Scope[] = ["classify", "read-results", "feedback", "delete", "admin"];

/**
 * Parses API keys from `name:tenant:sha256hex:scope|scope,...` or the
 * earlier `name:sha256hex:scope|scope,...`, whose tenant is the key's name
 * (the form used in environment variables and secret files). Keys are
 * stored hashed only.
 */
export function parseApiKeys(text: string): ApiKey[] {
  return text
    .split(/[\n,]/)
    .map((s) => s.trim())
    .filter((s) => s !== "" && !s.startsWith("#"))
    .map((entry) => {
      const parts = entry.split(":");
      const [name, tenant, sha256, scopes] = parts.length === 4 ? parts : [parts[0], parts[0], parts[1], parts[2]];
      if (parts.length > 4 || name === undefined || name === "" || sha256 === undefined || !/^[0-9a-f]{64}$/.test(sha256) || scopes === undefined) {
        throw new Error(`API key entry '${(name ?? "").slice(0, 40)}:…' must be name:tenant:sha256hex:scope|scope or name:sha256hex:scope|scope`);
      }
      if (tenant === undefined || !isTenantName(tenant)) throw new Error(`API key '${name}': the tenant must be 1 to 64 letters, digits, '.', '_' or '-'`);
      const list = scopes.split("|").map((s) => s.trim()) as Scope[];
      for (const s of list) if (!SCOPES.includes(s)) throw new Error(`API key '${name}': unknown scope '${s}' (one of ${SCOPES.join(", ")})`);
      return { name, tenant, sha256, scopes: list };
    });
}

/** sha256 (hex) of an API key, as stored in configuration. */
export function hashApiKey(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

function sameSecret(a: string, b: string): boolean {
  const x = createHash("sha256").update(a).digest();
  const y = createHash("sha256").update(b).digest();
  return timingSafeEqual(x, y);
}

/** A token bucket per caller plus a concurrency cap per caller; the caller table is bounded. */
function createLimiter(rate: AccessConfig["rate"]) {
  const buckets = new LRUCache<string, { tokens: number; at: number; active: number }>({ max: 100_000 });
  return {
    acquire(id: string): { ok: true; release: () => void } | { ok: false; retryAfterMs: number; reason: string } {
      const now = performance.now();
      const b = buckets.get(id) ?? { tokens: rate.burst, at: now, active: 0 };
      b.tokens = Math.min(rate.burst, b.tokens + ((now - b.at) / 1000) * rate.perSecond);
      b.at = now;
      buckets.set(id, b);
      if (b.active >= rate.concurrency) return { ok: false, retryAfterMs: 100, reason: `more than ${rate.concurrency} concurrent requests` };
      if (b.tokens < 1) return { ok: false, retryAfterMs: Math.ceil(((1 - b.tokens) / rate.perSecond) * 1000), reason: `over ${rate.perSecond} requests per second` };
      b.tokens -= 1;
      b.active++;
      let released = false;
      return {
        ok: true,
        release: () => {
          if (released) return;
          released = true;
          b.active--;
        },
      };
    },
  };
}

/** Access control of one node: the RPC interceptor, and the same credentials for operator HTTP routes. */
export interface AccessControl {
  readonly interceptor: Interceptor;
  /**
   * Whether an HTTP request carrying this Authorization header may read
   * operator data (/metrics, readiness details) on the public port: always
   * when access control is off (loopback), else an API key or JWT with the
   * admin scope.
   */
  allowOperator(authorization: string | null): Promise<{ ok: true } | { ok: false; status: 401 | 403; message: string }>;
}

/**
 * Authentication (API key or JWT as a bearer token), per-method
 * authorization by scope, the internal secret on InferenceService, and
 * per-caller rate and concurrency limits with retry information.
 * UNAUTHENTICATED without valid credentials, PERMISSION_DENIED without the
 * scope, RESOURCE_EXHAUSTED (with a retry-after-ms header) over a limit.
 */
export async function createAccessControl(config: AccessConfig, logger: Logger): Promise<AccessControl> {
  let jwtKey: CryptoKey | JWTVerifyGetKey | undefined;
  if (config.jwt !== undefined) {
    const text = readFileSync(config.jwt.keyFile, "utf8");
    jwtKey = text.trimStart().startsWith("{") ? createLocalJWKSet(JSON.parse(text) as Parameters<typeof createLocalJWKSet>[0]) : await importSPKI(text, "RS256");
  }
  const byHash = new Map(config.apiKeys.map((k) => [k.sha256, k]));
  const limiter = createLimiter(config.rate);

  async function authenticate(authorization: string | null): Promise<Caller | undefined> {
    if (authorization === null) return undefined;
    const m = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (m === null) throw new ConnectError("authorization must be 'Bearer <token>'", Code.Unauthenticated);
    const token = m[1]!;
    const key = byHash.get(hashApiKey(token));
    if (key !== undefined) return { id: `key:${key.name}`, tenant: key.tenant, scopes: new Set(key.scopes) };
    if (jwtKey !== undefined && token.split(".").length === 3) {
      try {
        const { payload } = await jwtVerify(token, jwtKey as JWTVerifyGetKey, {
          ...(config.jwt?.issuer === undefined ? {} : { issuer: config.jwt.issuer }),
          ...(config.jwt?.audience === undefined ? {} : { audience: config.jwt.audience }),
        });
        const raw = typeof payload.scope === "string" ? payload.scope.split(" ") : Array.isArray(payload.scp) ? (payload.scp as string[]) : [];
        const claim = config.jwt?.tenantClaim ?? "tenant";
        const tenant = payload[claim];
        // No silent default: a token without a tenant would see (and erase) the default tenant's images.
        if (typeof tenant !== "string" || !isTenantName(tenant)) throw new ConnectError(`invalid token: the '${claim}' claim must name a tenant`, Code.Unauthenticated);
        return { id: `jwt:${payload.sub ?? "anonymous"}`, tenant, scopes: new Set(raw.filter((s: string): s is Scope => SCOPES.includes(s as Scope))) };
      } catch (err) {
        if (err instanceof ConnectError) throw err;
        throw new ConnectError(`invalid token: ${err instanceof Error ? err.message : "verification failed"}`, Code.Unauthenticated);
      }
    }
    throw new ConnectError("unknown API key", Code.Unauthenticated);
  }

  if (config.open) logger.warn("access control is OFF: no API keys or JWT keys are configured (allowed on a loopback address only)");

  const interceptor: Interceptor = (next) => async (req) => {
    const service = req.service.typeName;
    const method = `${service}/${req.method.name}`;
    if (service === INTERNAL_SERVICE) {
      if (config.internalSecret !== undefined) {
        const given = req.header.get(INTERNAL_SECRET_HEADER);
        if (given === null || !sameSecret(given, config.internalSecret)) throw new ConnectError("InferenceService is internal: missing or wrong edge credentials", Code.Unauthenticated);
      }
      return next(req);
    }
    const scope = METHOD_SCOPES[method];
    // Health and reflection stay open: load balancers and grpcurl need them.
    if (scope === undefined) return next(req);
    let caller: Caller | undefined;
    if (!config.open) {
      caller = await authenticate(req.header.get("authorization"));
      if (caller === undefined) throw new ConnectError("missing credentials: send 'authorization: Bearer <API key or JWT>'", Code.Unauthenticated);
      if (!caller.scopes.has(scope) && !caller.scopes.has("admin")) throw new ConnectError(`the caller lacks the '${scope}' scope for ${method}`, Code.PermissionDenied);
    }
    const id = caller?.id ?? `ip:${req.header.get("x-forwarded-for")?.split(",")[0]?.trim() ?? "local"}`;
    // The handlers scope everything they read or write to this tenant.
    req.contextValues.set(tenantKey, caller?.tenant ?? DEFAULT_TENANT);
    // An open node (no credentials configured) has one tenant and its operator at the keyboard.
    req.contextValues.set(adminKey, config.open || caller?.scopes.has("admin") === true);
    const slot = limiter.acquire(id);
    if (!slot.ok) {
      const err = new ConnectError(`rate limit: ${slot.reason}; retry in ${slot.retryAfterMs} ms`, Code.ResourceExhausted);
      err.metadata.set("retry-after-ms", String(slot.retryAfterMs));
      throw err;
    }
    let streaming = false;
    try {
      const res = await next(req);
      if (!res.stream) return res;
      // A streaming answer holds its slot until the stream ends.
      streaming = true;
      const body = res.message;
      return {
        ...res,
        message: (async function* () {
          try {
            yield* body;
          } finally {
            slot.release();
          }
        })(),
      };
    } finally {
      if (!streaming) slot.release();
    }
  };

  return {
    interceptor,
    async allowOperator(authorization) {
      if (config.operatorsOpen) return { ok: true };
      if (config.open) return { ok: false, status: 403, message: "this node has no operator credentials (API keys or JWT): read /metrics and /readyz on its ADMIN_PORT" };
      try {
        const caller = await authenticate(authorization);
        if (caller === undefined) return { ok: false, status: 401, message: "missing credentials: send 'authorization: Bearer <API key or JWT>' with the admin scope" };
        if (!caller.scopes.has("admin")) return { ok: false, status: 403, message: "the caller lacks the 'admin' scope" };
        return { ok: true };
      } catch (err) {
        return { ok: false, status: 401, message: err instanceof ConnectError ? err.rawMessage : "invalid credentials" };
      }
    },
  };
}
