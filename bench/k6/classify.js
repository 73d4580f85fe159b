// k6 load test of CategorizeService.Classify over gRPC, using server reflection
// (no .proto files needed). Run it through `node --import tsx bench/k6/run.ts`
// (starts an embedded node when CATEGORIZE_ADDR is unset), or directly:
//
//   k6 run -e CATEGORIZE_ADDR=host:port -e CATEGORIZE_IMAGE=photo.jpg bench/k6/classify.js
//
// Environment (all optional except CATEGORIZE_IMAGE). Not K6_VUS/K6_DURATION: k6 reads
// those itself and they would replace the scenarios below.
//   CATEGORIZE_ADDR          host:port of an edge (default 127.0.0.1:8080)
//   CATEGORIZE_IMAGE         image file to send (k6 resolves a relative path from this script's
//                            folder; bench/k6/run.ts makes paths absolute from the current one)
//   CATEGORIZE_TLS           1 = TLS (h2 via ALPN); default plaintext h2c
//   CATEGORIZE_TLS_CA        PEM CA bundle that signed the server certificate (private CA)
//   CATEGORIZE_TLS_CERT, CATEGORIZE_TLS_KEY   client certificate and key (mTLS)
//   CATEGORIZE_TLS_INSECURE  1 = do not verify the server certificate (testing only)
//   CATEGORIZE_AUTHORITY     :authority / SNI override (e.g. when connecting by IP)
//   K6_PROFILE               steady (default) | ramp | spike
//   CLASSIFY_RATE            steady: requests/s; spike: base rate (default 10)
//   CLASSIFY_SPIKE_RATE      spike: peak requests/s (default 5 x CLASSIFY_RATE)
//   CLASSIFY_VUS             ramp: peak VUs; others: VUs kept ready (default 20)
//   CLASSIFY_DURATION        steady: length; ramp: hold at peak (default 30s)
//   CLASSIFY_DISTINCT        1 = make every request's bytes unique (JPEG comment segment),
//                            so edge cache and dedup never answer: the inference path
//   CLASSIFY_TOP_K           labels asked for (default 5)
//   CLASSIFY_P95_MS          threshold on p95 of grpc_req_duration (default 1000)
//   CLASSIFY_MAX_ERROR_RATE  threshold on the failed-request rate (default 0.01)

// k6 modules and globals (__ENV, open) have no TypeScript types in this repository (bench/k6/tsconfig.json
// only lets the linter parse the file), so the type-aware "unsafe" rules cannot judge it.
/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-return */
import grpc from "k6/net/grpc";
import encoding from "k6/encoding";
import exec from "k6/execution";
import { check } from "k6";
import { Rate, Trend } from "k6/metrics";

const env = (k, d) => (__ENV[k] === undefined || __ENV[k] === "" ? d : __ENV[k]);
const flag = (k) => ["1", "true", "yes"].includes(String(env(k, "")).toLowerCase());

const ADDR = env("CATEGORIZE_ADDR", "127.0.0.1:8080");
const IMAGE_PATH = env("CATEGORIZE_IMAGE", "");
if (IMAGE_PATH === "") throw new Error("set CATEGORIZE_IMAGE to an image file (e.g. -e CATEGORIZE_IMAGE=photo.jpg)");
const IMAGE = new Uint8Array(open(IMAGE_PATH, "b"));
const IMAGE_B64 = encoding.b64encode(IMAGE.buffer);
const DISTINCT = flag("CLASSIFY_DISTINCT");
if (DISTINCT && !(IMAGE[0] === 0xff && IMAGE[1] === 0xd8)) throw new Error("CLASSIFY_DISTINCT=1 needs a JPEG image");
const TOP_K = Number(env("CLASSIFY_TOP_K", "5"));

const TLS = flag("CATEGORIZE_TLS");
const tlsParams = {};
if (env("CATEGORIZE_TLS_CA", "") !== "") tlsParams.cacerts = open(env("CATEGORIZE_TLS_CA", ""));
if (env("CATEGORIZE_TLS_CERT", "") !== "") tlsParams.cert = open(env("CATEGORIZE_TLS_CERT", ""));
if (env("CATEGORIZE_TLS_KEY", "") !== "") tlsParams.key = open(env("CATEGORIZE_TLS_KEY", ""));
const connectParams = {
  plaintext: !TLS,
  reflect: true,
  timeout: "10s",
  ...(TLS && Object.keys(tlsParams).length > 0 ? { tls: tlsParams } : {}),
  ...(env("CATEGORIZE_AUTHORITY", "") === "" ? {} : { authority: env("CATEGORIZE_AUTHORITY", "") }),
};

const RATE = Number(env("CLASSIFY_RATE", "10"));
const SPIKE_RATE = Number(env("CLASSIFY_SPIKE_RATE", String(RATE * 5)));
const VUS = Number(env("CLASSIFY_VUS", "20"));
const DURATION = env("CLASSIFY_DURATION", "30s");
const PROFILE = env("K6_PROFILE", "steady");

const scenarios = {
  // A fixed arrival rate: latency at a known load (open model, no coordinated omission).
  steady: {
    executor: "constant-arrival-rate",
    rate: RATE,
    timeUnit: "1s",
    duration: DURATION,
    preAllocatedVUs: VUS,
    maxVUs: VUS * 4,
  },
  // Closed model: 0 -> VUS users, hold, back to 0; throughput rises until the service saturates.
  ramp: {
    executor: "ramping-vus",
    startVUs: 0,
    stages: [
      { duration: "30s", target: VUS },
      { duration: DURATION, target: VUS },
      { duration: "10s", target: 0 },
    ],
    gracefulRampDown: "10s",
  },
  // Base rate, a sudden burst to SPIKE_RATE, then back: backpressure and recovery.
  spike: {
    executor: "ramping-arrival-rate",
    startRate: RATE,
    timeUnit: "1s",
    preAllocatedVUs: VUS,
    maxVUs: VUS * 10,
    stages: [
      { duration: "20s", target: RATE },
      { duration: "5s", target: SPIKE_RATE },
      { duration: "20s", target: SPIKE_RATE },
      { duration: "5s", target: RATE },
      { duration: "20s", target: RATE },
    ],
  },
};
if (!(PROFILE in scenarios)) throw new Error(`K6_PROFILE must be one of ${Object.keys(scenarios).join(", ")}; got ${PROFILE}`);

const failed = new Rate("classify_failed");
const serverTotal = new Trend("classify_server_total_ms", true);

export const options = {
  scenarios: { [PROFILE]: scenarios[PROFILE] },
  insecureSkipTLSVerify: flag("CATEGORIZE_TLS_INSECURE"),
  thresholds: {
    grpc_req_duration: [`p(95)<${Number(env("CLASSIFY_P95_MS", "1000"))}`],
    classify_failed: [`rate<${Number(env("CLASSIFY_MAX_ERROR_RATE", "0.01"))}`],
  },
  summaryTrendStats: ["avg", "min", "med", "p(90)", "p(95)", "p(99)", "max"],
};

const client = new grpc.Client();
let connected = false;

/** The image with a JPEG comment (FF FE) unique to this VU and iteration, right after SOI. */
function distinctImage() {
  const text = `k6 ${exec.vu.idInTest} ${exec.vu.iterationInInstance} ${Date.now()}`;
  const out = new Uint8Array(IMAGE.length + 4 + text.length);
  out[0] = 0xff;
  out[1] = 0xd8;
  out[2] = 0xff;
  out[3] = 0xfe;
  out[4] = ((text.length + 2) >> 8) & 0xff;
  out[5] = (text.length + 2) & 0xff;
  for (let i = 0; i < text.length; i++) out[6 + i] = text.charCodeAt(i) & 0xff;
  out.set(IMAGE.subarray(2), 6 + text.length);
  return encoding.b64encode(out.buffer);
}

let reported = false;
/** Logs the first failure of each VU, so a misconfiguration is visible without flooding the output. */
function reportOnce(what) {
  if (reported) return;
  reported = true;
  console.error(`VU ${exec.vu.idInTest}: ${what}`);
}

export default function () {
  if (!connected) {
    try {
      client.connect(ADDR, connectParams);
      connected = true;
    } catch (err) {
      // Counted as a failed request, so thresholds cannot pass on a run that never reached the server.
      failed.add(true);
      reportOnce(`cannot connect to ${ADDR}: ${String(err)}`);
      return;
    }
  }
  const res = client.invoke(
    "categorize.v1.CategorizeService/Classify",
    { image: DISTINCT ? distinctImage() : IMAGE_B64, top_k: TOP_K },
    { timeout: "30s" },
  );
  const ok = check(res, {
    "status is OK": (r) => r !== undefined && r.status === grpc.StatusOK,
    "has labels": (r) => r !== undefined && r.message !== null && Array.isArray(r.message.labels) && r.message.labels.length > 0,
  });
  failed.add(!ok);
  if (!ok) reportOnce(`Classify failed: status ${res === undefined ? "none" : res.status} ${res !== undefined && res.error ? JSON.stringify(res.error) : ""}`);
  if (ok && res.message.timings !== undefined && res.message.timings.totalMs !== undefined) serverTotal.add(Number(res.message.timings.totalMs));
}
