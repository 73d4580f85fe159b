#!/usr/bin/env bash
# The whole test suite: unit, server, integration, infra and e2e tiers.
# Real Postgres, Kafka and MinIO are started locally (infra/local/services.sh)
# unless DATABASE_URL, KAFKA_BROKERS and S3_ENDPOINT point at running ones;
# services started here are stopped again on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

npm run --silent build:web

started=()
need=()
[ -n "${DATABASE_URL:-}" ] || need+=(postgres)
[ -n "${KAFKA_BROKERS:-}" ] || need+=(kafka)
[ -n "${S3_ENDPOINT:-}" ] || need+=(minio)
if [ "${#need[@]}" -gt 0 ] && [ "${CATEGORIZE_TEST_SERVICES:-local}" != "none" ]; then
  for s in "${need[@]}"; do
    if ! infra/local/services.sh status "$s" | grep -q " up"; then started+=("$s"); fi
  done
  infra/local/services.sh up "${need[@]}"
  # Only the URLs of the services this run needed; given ones stay as they were.
  while IFS= read -r line; do
    name=${line#export }
    name=${name%%=*}
    case "$name" in
      DATABASE_URL) [[ " ${need[*]} " == *" postgres "* ]] && eval "$line" ;;
      KAFKA_BROKERS) [[ " ${need[*]} " == *" kafka "* ]] && eval "$line" ;;
      S3_*) [[ " ${need[*]} " == *" minio "* ]] && eval "$line" ;;
    esac
  done < <(infra/local/services.sh env)
  export DATABASE_URL KAFKA_BROKERS S3_ENDPOINT S3_ACCESS_KEY S3_SECRET_KEY S3_BUCKET
fi
cleanup() {
  if [ "${#started[@]}" -gt 0 ] && [ "${CATEGORIZE_KEEP_SERVICES:-}" != "1" ]; then infra/local/services.sh down "${started[@]}" || true; fi
}
trap cleanup EXIT

mapfile -t files < <(find test -name '*.test.ts' -not -path '*/node_modules/*' | sort)
if [ "$#" -gt 0 ]; then files=("$@"); fi
# The leak watchdog fails a file whose process outlives its last test, naming what holds it.
node --import tsx --import ./test/support/leak-watchdog.ts --test --test-reporter=spec "${files[@]}"
