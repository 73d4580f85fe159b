#!/usr/bin/env bash
# Installs the command-line tools the tests and checks use, idempotently:
#   infra/local/tools.sh [grpcurl|kubeconform|ghz|chromium ...]   (none = all)
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

install_chromium() {
  if [[ -x /usr/bin/chromium ]]; then
    log "chromium: already installed"
    return 0
  fi
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  log "chromium: installing the Debian package"
  # One update per CI run: .ci/run sets APT_UPDATED after its own.
  [[ -n "${APT_UPDATED:-}" ]] || $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}

main() {
  local names=("$@")
  if [[ ${#names[@]} -eq 0 ]]; then
    names=(grpcurl kubeconform ghz chromium)
  fi
  for n in "${names[@]}"; do
    case "$n" in
      grpcurl)     go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@latest ;;
      kubeconform) go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform@latest ;;
      # ghz (Apache-2.0) is the gRPC load generator; k6 is AGPL-licensed and not used here.
      ghz)         go_tool ghz github.com/bojand/ghz/cmd/ghz@v0.93.0 ;;
      chromium)    install_chromium ;;
      path)        echo "export PATH=\"$BIN_DIR:\$PATH\"" ;;
      *) log "unknown tool: $n (grpcurl|kubeconform|ghz|chromium|path)"; exit 2 ;;
    esac
  done
}

main "$@"
