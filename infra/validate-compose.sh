#!/usr/bin/env bash
# Validates infra/compose.yaml without a Docker engine:
#   1. `docker compose config -q`: the Compose implementation's own loader and
#      the compose-spec JSON schema (interpolation, merge keys, env_file, types);
#   2. policy checks on the resolved model (`config --format json`): every
#      service has a healthcheck and resource limits, every depends_on has a
#      condition, no service runs privileged, example env file only.
#
#   infra/validate-compose.sh [COMPOSE_FILE]   install if needed, validate (default infra/compose.yaml)
#   infra/validate-compose.sh install          install only
#   infra/validate-compose.sh --tools-ready    exit 0 if a compose binary is available (installs nothing)
#
# Uses `docker compose` when that plugin is installed; otherwise the standalone
# binary <repo>/.local/bin/docker-compose, built from the Go module
# github.com/docker/compose (pinned below) fetched through the Go module proxy.
# `config` needs no engine. NO_INSTALL=1: never install.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
BIN_DIR="$REPO_ROOT/.local/bin"
COMPOSE_MODULE="github.com/docker/compose/v5"
COMPOSE_VERSION="v5.6.0"   # v5.7.x needs Go >= 1.26.10

log() { printf '[compose-validate] %s\n' "$*" >&2; }

compose_cmd() {
  if docker compose version >/dev/null 2>&1; then
    echo "docker compose"
  elif [[ -x "$BIN_DIR/docker-compose" ]]; then
    echo "$BIN_DIR/docker-compose"
  else
    return 1
  fi
}

install() {
  compose_cmd >/dev/null && return 0
  command -v go >/dev/null || { log "go is required to build docker compose"; return 1; }
  log "building docker compose $COMPOSE_VERSION from the Go module (a few minutes the first time)"
  local dir build
  # `go install mod@version` refuses modules whose go.mod has exclude/replace
  # directives, so build it as the main module from its downloaded source.
  dir="$(go mod download -json "$COMPOSE_MODULE@$COMPOSE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  build="$(mktemp -d "${TMPDIR:-/tmp}/compose-build.XXXXXX")"
  cp -R "$dir/." "$build/"
  chmod -R u+w "$build"
  mkdir -p "$BIN_DIR"
  (cd "$build" && go build -trimpath -ldflags "-s -w -X $COMPOSE_MODULE/internal.Version=$COMPOSE_VERSION" -o "$BIN_DIR/docker-compose" ./cmd)
  rm -rf "$build"
}

case "${1:-}" in
  --tools-ready)
    compose_cmd >/dev/null || { log "missing: docker compose (run: infra/validate-compose.sh install)"; exit 1; }
    exit 0
    ;;
  install)
    install
    exit 0
    ;;
esac

FILE="${1:-$SCRIPT_DIR/compose.yaml}"
if ! compose_cmd >/dev/null; then
  [[ "${NO_INSTALL:-}" == 1 ]] && { log "docker compose is not available"; exit 1; }
  install
fi
read -r -a COMPOSE <<<"$(compose_cmd)"
log "$("${COMPOSE[@]}" version 2>/dev/null | head -1): config -q $FILE"
"${COMPOSE[@]}" -f "$FILE" config -q

# Policy checks on the fully resolved model.
"${COMPOSE[@]}" -f "$FILE" config --format json | python3 -c '
import json, sys
model = json.load(sys.stdin)
errors = []
for name, svc in sorted(model.get("services", {}).items()):
    hc = svc.get("healthcheck")
    if not hc or hc.get("disable") or not hc.get("test"):
        errors.append(f"{name}: no healthcheck")
    limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    if not limits.get("memory") or not limits.get("cpus"):
        errors.append(f"{name}: no cpu/memory limits (deploy.resources.limits)")
    for dep, spec in (svc.get("depends_on") or {}).items():
        if spec.get("condition") not in ("service_healthy", "service_completed_successfully"):
            errors.append(f"{name}: depends_on {dep} without service_healthy/service_completed_successfully")
    if svc.get("privileged"):
        errors.append(f"{name}: privileged")
for e in errors:
    print("policy:", e, file=sys.stderr)
count = len(model.get("services", {}))
print(f"compose policy: {count} services, {len(errors)} problems", file=sys.stderr)
sys.exit(1 if errors else 0)
'
log "compose file valid"
