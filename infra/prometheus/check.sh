#!/usr/bin/env bash
# Validates the Prometheus and Alertmanager artifacts of categorize:
#   promtool check config   prometheus.yml, prometheus-compose.yml, prometheus-k8s.yml
#   promtool check rules    rules/*.yml
#   promtool test rules     tests/*.yml
#   amtool check-config     alertmanager.yml (+ route tests), when amtool exists
# Installs Debian's prometheus (promtool) and prometheus-alertmanager (amtool)
# when promtool is missing, and stops any daemon the packages start.
# Exits non-zero on the first failure.
#
# Environment:
#   PROMTOOL=path            use this promtool
#   PROMTOOL_UPSTREAM=1      build upstream promtool (Go module proxy) into
#                            <repo>/.local/bin once and use it (slow: ~7 min
#                            on 2 cores; validates kubernetes_sd_configs, which
#                            Debian's build does not include)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
UPSTREAM_VERSION="${PROMTOOL_UPSTREAM_VERSION:-v0.316.0}"

log() { printf '[prometheus-check] %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# PIDs of running Prometheus-family daemons, by executable path.
daemon_pids() {
  local p exe
  for p in /proc/[0-9]*; do
    exe="$(readlink "$p/exe" 2>/dev/null || true)"
    case "$exe" in
      /usr/bin/prometheus | /usr/bin/prometheus-alertmanager | /usr/bin/prometheus-node-exporter)
        echo "${p#/proc/}" ;;
    esac
  done
}

install_debian_packages() {
  command -v apt-get >/dev/null || die "promtool is missing and apt-get is not available; install Prometheus' promtool and set PROMTOOL"
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  local before after pid
  before=" $(daemon_pids | tr '\n' ' ') "
  log "installing Debian packages prometheus, prometheus-alertmanager (promtool, amtool)"
  # One update per CI run: .ci/run sets APT_UPDATED after its own.
  [[ -n "${APT_UPDATED:-}" ]] || $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-alertmanager >/dev/null
  # The packages enable and may start their services; only the tools are
  # wanted here.
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    $sudo systemctl disable --now prometheus prometheus-alertmanager >/dev/null 2>&1 || true
  fi
  after="$(daemon_pids)"
  for pid in $after; do
    if [[ "$before" != *" $pid "* ]]; then
      log "stopping daemon pid $pid started by the package install"
      $sudo kill "$pid" 2>/dev/null || true
    fi
  done
}

build_upstream_promtool() {
  local bin="$REPO_ROOT/.local/bin/promtool"
  if [[ ! -x "$bin" ]]; then
    command -v go >/dev/null || die "PROMTOOL_UPSTREAM=1 needs go"
    mkdir -p "$REPO_ROOT/.local/bin"
    log "building upstream promtool $UPSTREAM_VERSION into .local/bin (slow)"
    GOBIN="$REPO_ROOT/.local/bin" go install "github.com/prometheus/prometheus/cmd/promtool@$UPSTREAM_VERSION"
  fi
  echo "$bin"
}

pick_promtool() {
  if [[ -n "${PROMTOOL:-}" ]]; then
    echo "$PROMTOOL"
  elif [[ "${PROMTOOL_UPSTREAM:-}" == 1 ]]; then
    build_upstream_promtool
  elif [[ -x "$REPO_ROOT/.local/bin/promtool" ]]; then
    echo "$REPO_ROOT/.local/bin/promtool"
  else
    command -v promtool >/dev/null || install_debian_packages
    command -v promtool
  fi
}

PROMTOOL="$(pick_promtool)"
[[ -x "$PROMTOOL" ]] || die "promtool not found at $PROMTOOL"
log "using $("$PROMTOOL" --version 2>&1 | head -n1)"

cd "$SCRIPT_DIR"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

log "check config prometheus.yml"
"$PROMTOOL" check config prometheus.yml || die "prometheus.yml"

log "check config prometheus-compose.yml"
"$PROMTOOL" check config prometheus-compose.yml || die "prometheus-compose.yml"

# The in-cluster config names the service-account token and CA files, which
# exist only inside a pod: check its syntax only. Debian's promtool is built
# without Kubernetes service discovery; for it, check a copy whose
# kubernetes_sd_configs are replaced by static targets (everything else,
# relabelling included, is still checked).
log "check config prometheus-k8s.yml (syntax only)"
if ! "$PROMTOOL" check config --syntax-only prometheus-k8s.yml >"$TMP/k8s.out" 2>&1; then
  if grep -q 'field kubernetes_sd_configs not found' "$TMP/k8s.out"; then
    log "this promtool lacks kubernetes_sd_configs; checking a copy with static targets"
    sed -E \
      -e 's/^([[:space:]]*(- )?)kubernetes_sd_configs:/\1static_configs:/' \
      -e 's/^([[:space:]]*)- role: (pod|node|endpoints|endpointslice|service|ingress)[[:space:]]*$/\1- targets: ["kubernetes-sd.invalid:8080"]/' \
      prometheus-k8s.yml >"$TMP/prometheus-k8s.yml"
    "$PROMTOOL" check config --syntax-only "$TMP/prometheus-k8s.yml" || die "prometheus-k8s.yml"
  else
    cat "$TMP/k8s.out" >&2
    die "prometheus-k8s.yml"
  fi
fi

log "check rules"
"$PROMTOOL" check rules rules/*.yml || die "rules"

log "test rules"
"$PROMTOOL" test rules tests/*.yml || die "rule unit tests"

if command -v amtool >/dev/null; then
  log "amtool check-config alertmanager.yml"
  amtool check-config alertmanager.yml >/dev/null || die "alertmanager.yml"
  route() {
    local want="$1"
    shift
    amtool config routes test --config.file=alertmanager.yml --verify.receivers="$want" "$@" \
      >/dev/null 2>&1 || die "alertmanager route for $* is not $want"
  }
  route local-webhook severity=critical alertname=CategorizeServiceDown
  route local-webhook severity=warning alertname=CategorizeNotReady
  route null severity=info alertname=Anything
else
  log "amtool not installed: alertmanager.yml not checked (apt-get install prometheus-alertmanager)"
fi

log "all checks passed"
