import { createContextKey } from "@connectrpc/connect";

/** The tenant of a caller without credentials (the embedded node, a node behind a trusted gateway) and of rows older than tenants. */
export const DEFAULT_TENANT = "default";

/** Metadata header carrying the caller's tenant on edge -> core calls whose request message is public (RecordFeedback). */
export const TENANT_HEADER = "x-categorize-tenant";

const TENANT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Whether a string may name a tenant: it is stored in rows and events, so it is short and printable. */
export function isTenantName(s: string): boolean {
  return TENANT.test(s);
}

/**
 * The authenticated caller's tenant, set by access control on each request's
 * context values and read by the handlers (the default tenant when access
 * control is open).
 */
export const tenantKey = createContextKey<string>(DEFAULT_TENANT, { description: "categorize tenant" });

/** The tenant an internal request names: empty (an edge of an earlier version) is the default tenant. */
export function tenantOrDefault(s: string): string {
  return s === "" ? DEFAULT_TENANT : s;
}

/** Whether the caller has the admin scope (set by access control; true on an open node, whose one tenant is its operator's). */
export const adminKey = createContextKey<boolean>(false, { description: "categorize admin caller" });

/** Metadata header on edge -> core ReadQuality: "1" asks for every tenant's figures (an admin's view). */
export const ALL_TENANTS_HEADER = "x-categorize-all-tenants";
