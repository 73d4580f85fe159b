import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  DataType,
  GetModelInfoResponseSchema,
  InferResponseSchema,
  InferenceService,
  PreprocessingSchema,
  TensorLayout,
  type InferRequest,
  type InferResponse,
} from "../gen/categorize/v1/inference_pb.js";
import { ModelRefSchema } from "../gen/categorize/v1/types_pb.js";
import { createAsyncQueue } from "../common/async-queue.js";
import { CategorizeError, Code, invalidArgument, notFound, toCategorizeError, toConnectError, unavailable } from "../common/errors.js";
import type { Logger } from "../common/logger.js";
import { extractTraceContext, inSpan, markError, SpanKind, type Span } from "../common/spans.js";
import type { Classifier, WireTensor } from "./classifier.js";
import type { Feedback } from "./feedback.js";
import { checkTextField } from "../common/text-fields.js";
import { CategoryQualitySchema, DeleteImageResponseSchema, GetQualityResponseSchema, SubmitFeedbackResponseSchema, TenantQualitySchema, WrongClassSchema } from "../gen/categorize/v1/categorize_pb.js";
import { ALL_TENANTS_HEADER, isTenantName, TENANT_HEADER, tenantOrDefault } from "../common/tenant.js";
import type { Erasure } from "./erasure.js";
import { toClassifyResponse, toItemError } from "./wire.js";
import type { CategoryScorer } from "./taxonomy/category-scorer.js";
import { toListCategoriesResponse } from "./taxonomy/taxonomy-wire.js";

const SHA256 = /^[0-9a-f]{64}$/;

/**
 * InferenceService on core: a long-lived stream per edge whose items are
 * classified concurrently and answered as they finish, correlated by id.
 * The stream may hold maxInFlight items; beyond that an item is refused with
 * RESOURCE_EXHAUSTED instead of being buffered.
 */
/** What InferenceService works with. */
export interface InferenceServiceDeps {
  readonly classifier: Classifier;
  readonly feedback: Feedback;
  /** The taxonomy in use, for ListCategories. */
  readonly taxonomy: { readonly scorer: CategoryScorer };
  readonly erasure: Erasure;
  readonly logger: Logger;
  readonly maxInFlight: number;
  readonly maxBatchSize: number;
  readonly shutdownSignal: AbortSignal;
}

/** The implementation itself, for the router and for the embedded node's in-process transport. */
export function createInferenceServiceImpl(deps: InferenceServiceDeps): ServiceImpl<typeof InferenceService> {
  const { classifier } = deps;

  return {
    infer(requests: AsyncIterable<InferRequest>, ctx: HandlerContext): AsyncIterable<InferResponse> {
      const out = createAsyncQueue<InferResponse>();
      // In-flight items finish during a drain; only the client going away cancels them.
      const signal = ctx.signal;
      let inFlight = 0;
      let reading = true;
      const reply = (id: string, outcome: InferResponse["outcome"]) => out.push(create(InferResponseSchema, { id, outcome }));
      const finishIfDone = () => {
        if ((!reading || deps.shutdownSignal.aborted) && inFlight === 0) {
          deps.shutdownSignal.removeEventListener("abort", finishIfDone);
          out.end();
        }
      };
      // On shutdown the stream ends once its in-flight items are answered; the edge reconnects elsewhere.
      deps.shutdownSignal.addEventListener("abort", finishIfDone, { once: true });

      const classifyItem = async (req: InferRequest, span: Span) => {
        try {
          const result = await classifier.classify({
            sha256: req.sha256,
            tensor: toWireTensor(req),
            image: {
              sha256: req.sha256,
              sizeBytes: Number(req.image?.sizeBytes ?? 0n),
              mime: req.image?.mime ?? "",
              width: req.image?.width ?? 0,
              height: req.image?.height ?? 0,
              objectKey: req.image?.objectKey ?? "",
            },
            topK: req.topK,
            requestId: req.requestId,
            tenant: tenantOrDefault(req.tenant),
            preprocessMs: 0,
            deadline: req.deadlineUnixMs > 0n ? Number(req.deadlineUnixMs) : undefined,
            signal,
          });
          span.setAttribute("dedup_hit", result.cached);
          reply(req.id, { case: "result", value: toClassifyResponse(result, { requestId: req.requestId }) });
        } catch (err) {
          const e = toCategorizeError(err);
          markError(span, e);
          if (e.code === Code.Internal) deps.logger.error({ err, id: req.id }, "inference failed");
          reply(req.id, { case: "error", value: toItemError(e) });
        } finally {
          inFlight--;
          finishIfDone();
        }
      };
      // Each item continues the edge's trace: core.classify is a child of the edge.forward span in req.traceContext.
      const handle = (req: InferRequest) =>
        inSpan("core.classify", { kind: SpanKind.SERVER, parent: extractTraceContext(req.traceContext), attributes: { sha256: req.sha256 } }, (span) => classifyItem(req, span));

      (async () => {
        try {
          for await (const req of requests) {
            if (req.id === "") {
              throw invalidArgument("every InferRequest needs an id");
            }
            const invalid = checkInferRequest(req);
            if (invalid !== undefined) {
              reply(req.id, { case: "error", value: toItemError(invalidArgument(invalid)) });
              continue;
            }
            if (!SHA256.test(req.sha256)) {
              reply(req.id, { case: "error", value: toItemError(invalidArgument("sha256 must be 64 lower-case hex digits")) });
              continue;
            }
            if (deps.shutdownSignal.aborted) {
              reply(req.id, { case: "error", value: toItemError(unavailable("core is shutting down; retry on another core")) });
              continue;
            }
            if (inFlight >= deps.maxInFlight) {
              reply(req.id, { case: "error", value: toItemError(new CategorizeError(Code.ResourceExhausted, `stream has ${deps.maxInFlight} requests in flight; wait for answers`)) });
              continue;
            }
            inFlight++;
            void handle(req);
          }
          reading = false;
          finishIfDone();
        } catch (err) {
          reading = false;
          out.fail(toConnectError(err));
        }
      })().catch(() => undefined);

      return out.iterate(ctx.signal);
    },

    getModelInfo() {
      return create(GetModelInfoResponseSchema, {
        model: create(ModelRefSchema, { name: classifier.model.name, version: classifier.model.version, sha256: classifier.model.sha256 }),
        preprocessing: create(PreprocessingSchema, {
          resizeShorter: classifier.preprocessing.resizeShorter,
          cropHeight: classifier.preprocessing.cropHeight,
          cropWidth: classifier.preprocessing.cropWidth,
          channelOrder: classifier.preprocessing.channelOrder,
          wireDtype: DataType.UINT8,
          wireLayout: TensorLayout.HWC,
        }),
        maxBatchSize: deps.maxBatchSize,
        maxInFlight: deps.maxInFlight,
        numClasses: classifier.numClasses,
        taxonomy: deps.taxonomy.scorer.taxonomy.fingerprint,
      });
    },

    listCategories() {
      return toListCategoriesResponse(deps.taxonomy.scorer, classifier.model);
    },

    async recordFeedback(req, ctx) {
      const tenant = tenantOf(ctx.requestHeader.get(TENANT_HEADER) ?? "");
      const out = await deps.feedback.record({ tenant, sha256: req.sha256, trueClass: req.trueClass, source: req.source }).catch((err: unknown) => {
        throw toConnectError(err);
      });
      return create(SubmitFeedbackResponseSchema, { top1Correct: out.top1Correct, predictedClass: out.predicted });
    },

    async readQuality(req, ctx) {
      const tenant = ctx.requestHeader.get(ALL_TENANTS_HEADER) === "1" ? undefined : tenantOf(ctx.requestHeader.get(TENANT_HEADER) ?? "");
      const q = await deps.feedback.quality({ topWrong: req.topWrong === 0 ? 5 : req.topWrong, tenant }).catch((err: unknown) => {
        throw toConnectError(err);
      });
      return create(GetQualityResponseSchema, {
        accuracy: q.accuracy,
        macroPrecision: q.macroPrecision,
        macroRecall: q.macroRecall,
        macroF1: q.macroF1,
        reviewed: q.samples,
        mostOftenWrong: q.mostOftenWrong.map((w) => create(WrongClassSchema, w)),
        windowHours: q.windowHours,
        windowStartUnixMs: BigInt(Math.round(q.windowStart)),
        model: create(ModelRefSchema, { name: q.model.name, version: q.model.version, sha256: q.model.sha256 }),
        categories: create(CategoryQualitySchema, {
          taxonomy: q.categories.taxonomy,
          accuracy: q.categories.accuracy,
          macroPrecision: q.categories.macroPrecision,
          macroRecall: q.categories.macroRecall,
          macroF1: q.categories.macroF1,
        }),
        tenant: q.tenant ?? "",
        tenants: q.byTenant.map((t) => create(TenantQualitySchema, { tenant: t.tenant, accuracy: t.accuracy, macroPrecision: t.macroPrecision, macroRecall: t.macroRecall, macroF1: t.macroF1, reviewed: t.samples })),
      });
    },

    async lookupResult(req) {
      if (!SHA256.test(req.sha256)) throw toConnectError(invalidArgument("sha256 must be 64 lower-case hex digits"));
      const tenant = tenantOf(req.tenant);
      const found = await classifier.lookupAny(req.sha256, req.topK, tenant).catch((err: unknown) => {
        throw toConnectError(err);
      });
      // Unknown, or another tenant's: the same status and message.
      if (found === undefined) throw toConnectError(notFound(`no stored result for ${req.sha256}`));
      return toClassifyResponse(found, { requestId: "" });
    },

    async forgetImage(req) {
      if (!SHA256.test(req.sha256)) throw toConnectError(invalidArgument("sha256 must be 64 lower-case hex digits"));
      const tenant = tenantOf(req.tenant);
      await deps.erasure.erase(req.sha256, tenant).catch((err: unknown) => {
        throw toConnectError(err);
      });
      return create(DeleteImageResponseSchema, { sha256: req.sha256 });
    },
  };
}

/** The tenant an edge names, checked: it is stored in rows and events. */
function tenantOf(raw: string): string {
  const tenant = tenantOrDefault(raw);
  if (!isTenantName(tenant)) throw toConnectError(invalidArgument("tenant must be 1 to 64 letters, digits, '.', '_' or '-'"));
  return tenant;
}

function toWireTensor(req: InferRequest): WireTensor {
  const t = req.tensor;
  if (t === undefined) throw invalidArgument("tensor is required");
  if (t.dtype === DataType.UINT8 && t.layout === TensorLayout.HWC) return { dtype: "uint8", layout: "HWC", shape: t.shape, data: t.data };
  if (t.dtype === DataType.FLOAT32 && t.layout === TensorLayout.CHW) return { dtype: "float32", layout: "CHW", shape: t.shape, data: t.data };
  throw invalidArgument(`unsupported tensor dtype/layout ${DataType[t.dtype]}/${TensorLayout[t.layout]}: send UINT8 HWC or FLOAT32 CHW`);
}

/** Everything core stores from a request must fit its columns and carry no control characters. */
function checkInferRequest(req: InferRequest): string | undefined {
  try {
    checkTextField("request_id", req.requestId);
  } catch (err) {
    return (err as Error).message;
  }
  if (!isTenantName(tenantOrDefault(req.tenant))) return "tenant must be 1 to 64 letters, digits, '.', '_' or '-'";
  const img = req.image;
  if (img === undefined) return undefined;
  if (img.mime !== "" && !/^image\/[a-z0-9.+-]{1,40}$/.test(img.mime)) return "image.mime must be an image media type";
  if (img.objectKey !== "" && !/^originals\/[0-9a-f]{2}\/[0-9a-f]{2}\/[0-9a-f]{64}\.[a-z]{2,5}$/.test(img.objectKey)) return "image.object_key is not an originals key";
  if (img.width > 1_000_000 || img.height > 1_000_000) return "image width and height must be at most 1000000";
  if (img.sizeBytes > BigInt(Number.MAX_SAFE_INTEGER)) return "image.size_bytes is too large";
  return undefined;
}
