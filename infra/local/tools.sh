#!/usr/bin/env bash
# Installs the command-line tools the tests and checks use, idempotently:
#   infra/local/tools.sh [grpcurl|kubeconform|k6|chromium ...]   (none = all)
# Go tools are built from source into <repo>/.local/bin (gitignored), because
# only package registries are reachable (no prebuilt release downloads).
# Print `export PATH=...` for .local/bin with: infra/local/tools.sh path
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
BIN_DIR="$REPO_ROOT/.local/bin"

log() { printf '[tools] %s\n' "$*" >&2; }

# go install <module path>@<version> into .local/bin unless the binary is there.
go_tool() {
  local name="$1" pkg="$2"
  if [[ -x "$BIN_DIR/$name" ]]; then
    log "$name: already in .local/bin"
    return 0
  fi
  command -v go >/dev/null || { log "go is required to build $name"; return 1; }
  mkdir -p "$BIN_DIR"
  log "$name: building $pkg (slow the first time)"
  local t0=$SECONDS
  GOBIN="$BIN_DIR" go install "$pkg"
  log "$name: built in $((SECONDS - t0))s"
}

install_k6() {
  # k6 may publish a /v2 module path; use it when the proxy knows it,
  # otherwise the v1 module path.
  local pkg="go.k6.io/k6@latest"
  if [[ ! -x "$BIN_DIR/k6" ]] && go list -m go.k6.io/k6/v2@latest >/dev/null 2>&1; then
    pkg="go.k6.io/k6/v2@latest"
  fi
  go_tool k6 "$pkg"
}

install_chromium() {
  if [[ -x /usr/bin/chromium ]]; then
    log "chromium: already installed"
    return 0
  fi
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  log "chromium: installing the Debian package"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}

main() {
  local names=("$@")
  if [[ ${#names[@]} -eq 0 ]]; then
    names=(grpcurl kubeconform k6 chromium)
  fi
  for n in "${names[@]}"; do
    case "$n" in
      grpcurl)     go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@latest ;;
      kubeconform) go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform@latest ;;
      k6)          install_k6 ;;
      chromium)    install_chromium ;;
      path)        echo "export PATH=\"$BIN_DIR:\$PATH\"" ;;
      *) log "unknown tool: $n (grpcurl|kubeconform|k6|chromium|path)"; exit 2 ;;
    esac
  done
}

main "$@"
