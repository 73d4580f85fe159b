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

# Explicit arguments (files, --test-name-pattern=...) run as given, in one run.
if [ "$#" -gt 0 ]; then
  node --import tsx --import ./test/support/leak-watchdog.ts --test --test-reporter=spec "$@"
  exit $?
fi

# Two phases. Files that stop and start the shared Postgres, Kafka or MinIO
# (they call mayRestartServices) or that measure time, memory or CPU under load
# (test/reliability, test/security) run one at a time with nothing beside them:
# a restart would fail the other files' requests, and a neighbour's load their
# bounds. Every other file is isolated by its own schema, bucket, consumer
# group and port 0, and they run TEST_CONCURRENCY files at a time (default 2:
# on 2 cores most of a file's time is spent waiting on services and nodes).
mapfile -t files < <(find test -name '*.test.ts' -not -path '*/node_modules/*' | sort)
shared=() alone=()
for f in "${files[@]}"; do
  if [[ "$f" == test/reliability/* || "$f" == test/security/* ]] || grep -q 'mayRestartServices' "$f"; then alone+=("$f"); else shared+=("$f"); fi
done

passed=0 failed=0
# Why files failed beyond a failing test (the watchdog's reports, errors after a test ended) and
# which files were slow to exit: the runner's closing list says only 'test failed' for such a file,
# and its lines are far up in the log.
recap=$(mktemp)
run_phase() {
  local name="$1" concurrency="$2" t0=$SECONDS rc=0 log
  shift 2
  log=$(mktemp)
  printf '\n=== tests: %s (%d files, %s at a time)\n' "$name" "$#" "$concurrency"
  # The leak watchdog fails a file whose process outlives its last test, naming what holds it.
  node --import tsx --import ./test/support/leak-watchdog.ts --test --test-reporter=spec --test-concurrency="$concurrency" "$@" | tee "$log" || rc=$?
  # The runner's own summary of this phase, added up for the whole suite's closing line.
  passed=$((passed + $(awk '/^ℹ pass [0-9]+$/ { n = $3 } END { print n + 0 }' "$log")))
  failed=$((failed + $(awk '/^ℹ fail [0-9]+$/ { n = $3 } END { print n + 0 }' "$log")))
  awk '/\[leak-watchdog\].*exited [0-9]+ ms after/ { print }
       /\[leak-watchdog\].*still running/ { on = 1 } on { print } /The file fails:/ { on = 0 }
       /asynchronous activity after the test ended/ { print; n = 6; next } n > 0 { print; n-- }' "$log" >> "$recap"
  rm -f "$log"
  printf '=== tests: %s: %s in %d s\n' "$name" "$([ "$rc" -eq 0 ] && echo passed || echo FAILED)" "$((SECONDS - t0))"
  return "$rc"
}

status=0
run_phase "isolated files" "${TEST_CONCURRENCY:-2}" "${shared[@]}" || status=1
run_phase "files that restart services or measure under load" 1 "${alone[@]}" || status=1
# A phase that failed without a summary (the runner crashed) still fails the suite.
[ "$status" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
if [ -s "$recap" ]; then printf '\n=== what held or failed files after their tests\n'; cat "$recap"; fi
rm -f "$recap"
printf '\ntests: %d passed, %d failed\n' "$passed" "$failed"
exit "$status"
