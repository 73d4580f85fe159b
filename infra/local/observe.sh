#!/usr/bin/env bash
# One command for a local system you can watch: a core on 127.0.0.1:8081
# (admin port 9465), an edge on 127.0.0.1:8080 (admin port 9464) and
# Prometheus on 127.0.0.1:9090 scraping both admin ports with the repository's
# rules (infra/prometheus/prometheus.yml). Uses the real data
# services when their URLs are set (eval "$(infra/local/services.sh env)"),
# else the embedded stores. Ctrl-C stops everything this script started.
#
#   CATEGORIZE_MODEL=../shared/models/mobilenetv2-12-int8.onnx infra/local/observe.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v prometheus >/dev/null; then
  infra/prometheus/check.sh >/dev/null   # installs Debian's prometheus (and checks the rules)
fi
npm run --silent build:web

# Edge and core share this run's secret; it never leaves the machine.
CORE_SHARED_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export CORE_SHARED_SECRET
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Each node's admin port serves /healthz, /readyz (with the failing checks)
# and /metrics without credentials; the public ports serve neither of the last two.
PORT=8081 ADMIN_PORT=9465 NODE_ID=core-1 node --import tsx cli/main.ts serve core &
pids+=($!)
for _ in $(seq 1 60); do curl -sf http://127.0.0.1:9465/readyz >/dev/null && break; sleep 1; done
PORT=8080 ADMIN_PORT=9464 NODE_ID=edge-1 CORE_URLS=http://127.0.0.1:8081 node --import tsx cli/main.ts serve edge &
pids+=($!)
mkdir -p .local/prometheus
prometheus --config.file=infra/prometheus/prometheus.yml --storage.tsdb.path=.local/prometheus \
  --web.listen-address=127.0.0.1:9090 >.local/prometheus/prometheus.log 2>&1 &
pids+=($!)
for _ in $(seq 1 30); do curl -sf http://127.0.0.1:9090/-/ready >/dev/null && break; sleep 1; done
cat <<MSG

  page        http://127.0.0.1:8080/
  metrics     http://127.0.0.1:9464/metrics  http://127.0.0.1:9465/metrics  (edge, core admin ports)
  readiness   http://127.0.0.1:9464/readyz   http://127.0.0.1:9465/readyz
  prometheus  http://127.0.0.1:9090/  (alerts: /alerts, e.g. query categorize:rpc_requests:rate5m)

Ctrl-C stops the nodes and Prometheus.
MSG
wait
