#!/usr/bin/env bash
# Checks infra/nginx/nginx.conf with the real nginx: renders it (render.sh) on
# 127.0.0.1 with free ports and a throwaway CA + server certificate made with
# openssl, then runs `nginx -t`. Installs Debian's nginx if it is missing.
#
#   infra/nginx/check.sh                 install if needed, then check
#   infra/nginx/check.sh install         install only
#   infra/nginx/check.sh --tools-ready   exit 0 if nginx, openssl, envsubst exist
# NO_INSTALL=1: never install.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf '[nginx-check] %s\n' "$*" >&2; }

nginx_bin() {
  if command -v nginx >/dev/null; then command -v nginx
  elif [[ -x /usr/sbin/nginx ]]; then echo /usr/sbin/nginx
  else return 1
  fi
}

tools_ready() {
  local missing=()
  nginx_bin >/dev/null || missing+=(nginx)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v envsubst >/dev/null || missing+=(envsubst)
  if ((${#missing[@]})); then
    log "missing: ${missing[*]} (run: infra/nginx/check.sh install)"
    return 1
  fi
}

install() {
  tools_ready 2>/dev/null && return 0
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  log "installing Debian packages nginx openssl gettext-base"
  # One update per CI run: .ci/run sets APT_UPDATED after its own.
  [[ -n "${APT_UPDATED:-}" ]] || $sudo apt-get update -qq
  # policy-rc.d-free containers may try to start the service: it is not needed.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx openssl gettext-base >/dev/null
}

# A throwaway CA and a server certificate for localhost/127.0.0.1 signed by it.
make_certs() {
  local dir="$1"
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj "/CN=categorize throwaway test CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 1 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

check() {
  local nginx out
  nginx="$(nginx_bin)"
  out="$(mktemp -d "${TMPDIR:-/tmp}/categorize-nginx.XXXXXX")"
  CHECK_DIR="$out"
  trap 'rm -rf "$CHECK_DIR"' EXIT
  make_certs "$out/tls"
  NGINX_BIN="$nginx" \
  NGINX_LISTEN_HTTPS="127.0.0.1:$(free_port)" \
  NGINX_LISTEN_HTTP="127.0.0.1:$(free_port)" \
  NGINX_EDGE_SERVERS="server 127.0.0.1:$(free_port); server 127.0.0.1:$(free_port);" \
    "$SCRIPT_DIR/render.sh" "$out" >/dev/null
  log "$("$nginx" -v 2>&1): nginx -t on the rendered config"
  "$nginx" -t -q -e stderr -p "$out" -c "$out/nginx.conf" 2>&1 | sed 's/^/  /' >&2
  local rc="${PIPESTATUS[0]}"
  if [[ "$rc" -ne 0 ]]; then
    log "FAILED"
    return 1
  fi
  log "configuration OK"
}

case "${1:-}" in
  --tools-ready) tools_ready ;;
  install) install ;;
  "")
    if ! tools_ready 2>/dev/null; then
      [[ "${NO_INSTALL:-}" == 1 ]] && { tools_ready; exit 1; }
      install
    fi
    check
    ;;
  *) log "usage: $0 [install|--tools-ready]"; exit 2 ;;
esac
