#!/usr/bin/env bash
# Renders infra/nginx/nginx.conf (an envsubst template) into OUT_DIR/nginx.conf
# and copies the includes next to it, for running nginx outside the container
# image (tests, local checks). Only NGINX_* variables are substituted, exactly
# like the official image's entrypoint with NGINX_ENVSUBST_FILTER=^NGINX_.
#
#   infra/nginx/render.sh OUT_DIR
#   nginx -t -p OUT_DIR -c OUT_DIR/nginx.conf          (check)
#   nginx -p OUT_DIR -c OUT_DIR/nginx.conf -g 'daemon off;'   (run)
#
# NGINX_TEMPLATE / NGINX_INCLUDES_SRC override the template and the includes
# source directory (tests render deliberately broken copies).
# Every variable may be set in the environment; the defaults suit a local run
# on 127.0.0.1 (ports 8443/8080, edge at 127.0.0.1:8081, state under OUT_DIR).
# NGINX_HTTP2_LISTEN_FLAG/NGINX_HTTP2_DIRECTIVE default to what the installed
# nginx understands: `http2 on;` needs nginx >= 1.25.1, older ones take the
# `listen ... http2` flag.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:?usage: render.sh OUT_DIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

nginx_supports_http2_directive() {
  local bin="${NGINX_BIN:-nginx}" v major minor patch
  command -v "$bin" >/dev/null || return 0 # unknown: assume a current nginx
  v="$("$bin" -v 2>&1 | sed -n 's#.*nginx/\([0-9][0-9.]*\).*#\1#p')"
  IFS=. read -r major minor patch <<<"$v"
  (( major > 1 || (major == 1 && (minor > 25 || (minor == 25 && ${patch:-0} >= 1))) ))
}

if [[ -z "${NGINX_HTTP2_DIRECTIVE+x}" && -z "${NGINX_HTTP2_LISTEN_FLAG+x}" ]]; then
  if nginx_supports_http2_directive; then
    NGINX_HTTP2_LISTEN_FLAG="" NGINX_HTTP2_DIRECTIVE="http2 on;"
  else
    NGINX_HTTP2_LISTEN_FLAG=" http2" NGINX_HTTP2_DIRECTIVE="# http2: enabled on the listen line (nginx < 1.25.1)"
  fi
fi

export NGINX_LISTEN_HTTPS="${NGINX_LISTEN_HTTPS:-127.0.0.1:8443}"
export NGINX_LISTEN_HTTP="${NGINX_LISTEN_HTTP:-127.0.0.1:8080}"
export NGINX_HTTPS_REDIRECT_PORT="${NGINX_HTTPS_REDIRECT_PORT-}"
export NGINX_SERVER_NAME="${NGINX_SERVER_NAME:-localhost}"
export NGINX_TLS_CERT="${NGINX_TLS_CERT:-$OUT/tls/server.crt}"
export NGINX_TLS_KEY="${NGINX_TLS_KEY:-$OUT/tls/server.key}"
export NGINX_EDGE_SERVERS="${NGINX_EDGE_SERVERS:-server 127.0.0.1:8081;}"
export NGINX_RESOLVER="${NGINX_RESOLVER:-127.0.0.1 ipv6=off}"
export NGINX_HTTP2_LISTEN_FLAG NGINX_HTTP2_DIRECTIVE
export NGINX_INCLUDE_DIR="${NGINX_INCLUDE_DIR:-$OUT/includes}"
export NGINX_PID_FILE="${NGINX_PID_FILE:-$OUT/nginx.pid}"
export NGINX_TEMP_DIR="${NGINX_TEMP_DIR:-$OUT/temp}"
export NGINX_ERROR_LOG="${NGINX_ERROR_LOG:-$OUT/error.log}"
export NGINX_ACCESS_LOG="${NGINX_ACCESS_LOG:-$OUT/access.log}"
export NGINX_WORKER_PROCESSES="${NGINX_WORKER_PROCESSES:-1}"

TEMPLATE="${NGINX_TEMPLATE:-$SCRIPT_DIR/nginx.conf}"
INCLUDES_SRC="${NGINX_INCLUDES_SRC:-$SCRIPT_DIR/includes}"

command -v envsubst >/dev/null || { echo "render.sh: envsubst is missing (Debian: apt-get install gettext-base)" >&2; exit 1; }

# Only the NGINX_ variables (nginx's own $host, $request_id, ... stay).
vars="$(compgen -e | grep '^NGINX_' | sed 's/.*/${&}/' | tr '\n' ' ')"
envsubst "$vars" <"$TEMPLATE" >"$OUT/nginx.conf"
# shellcheck disable=SC2016  # a literal ${NGINX_ is what is searched for
if grep -nv '^[[:space:]]*#' "$OUT/nginx.conf" | grep '\${NGINX_[A-Z]' >&2; then
  echo "render.sh: unsubstituted variables above" >&2
  exit 1
fi
mkdir -p "$OUT/includes" "$NGINX_TEMP_DIR"
if [[ "$NGINX_INCLUDE_DIR" == "$OUT/includes" ]]; then
  cp "$INCLUDES_SRC"/*.conf "$OUT/includes/"
fi
echo "$OUT/nginx.conf"
