#!/usr/bin/env bash
# Local backing services for categorize: PostgreSQL, Kafka (KRaft) and MinIO.
#
#   infra/local/services.sh up|down|status|env|restart [postgres|kafka|minio ...]
#
# No names = all three. `up` installs whatever is missing (Debian packages,
# Maven Central jars, a Go build), starts each service bound to 127.0.0.1 and
# waits until it really answers. All state (data, logs, pid files, jars,
# binaries) lives in <repo>/.local/, which is gitignored; `restart NAME` keeps
# the data. `down` stops only the pids this script recorded. `status` exits 3
# when a named service is down. `env` prints the `export` lines the app reads:
#   eval "$(infra/local/services.sh env)"
# Ports: PG_PORT, KAFKA_PORT (+ KAFKA_CONTROLLER_PORT), MINIO_PORT
# (+ MINIO_CONSOLE_PORT) override the defaults below.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
STATE="$REPO_ROOT/.local"
RUN_DIR="$STATE/run"   # pid files written by this script
BIN_DIR="$STATE/bin"   # binaries we build (minio; tools.sh puts its tools here too)

PG_PORT="${PG_PORT:-55432}"
KAFKA_PORT="${KAFKA_PORT:-59092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
MINIO_PORT="${MINIO_PORT:-59000}"
MINIO_CONSOLE_PORT="${MINIO_CONSOLE_PORT:-$((MINIO_PORT + 1))}"

# Credentials of a throwaway local test instance, not secrets.
DB_NAME=categorize DB_USER=categorize DB_PASSWORD=categorize
S3_ACCESS_KEY=categorize S3_SECRET_KEY=categorize-secret S3_BUCKET=categorize

KAFKA_VERSION="${KAFKA_VERSION:-3.9.1}"
SLF4J_VERSION=1.7.36     # the slf4j Kafka 3.9 is built against
RELOAD4J_VERSION=1.2.25  # the log4j-1 implementation Kafka 3.9 ships
KAFKA_DIR="$STATE/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs-$KAFKA_VERSION"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"

PG_DIR="$STATE/postgres"
PG_DATA="$PG_DIR/data"
MINIO_DIR="$STATE/minio"

ALL_SERVICES=(postgres kafka minio)

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

database_url() { echo "postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME"; }

# apt-get as root, or through sudo for a developer's own account.
apt_install() {
  local sudo=""
  is_root || sudo="sudo"
  if [[ -z "${APT_UPDATED:-}" ]]; then
    $sudo apt-get update -qq
    APT_UPDATED=1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ---------------------------------------------------------------- pid files --

pid_file() { echo "$RUN_DIR/$1.pid"; }

# Text that must appear in /proc/PID/cmdline, so that a stale pid file whose
# pid the kernel has reused for something else is never signalled.
cmd_marker() {
  case "$1" in
    postgres) echo postgres ;;
    kafka)    echo kafka.Kafka ;;
    minio)    echo minio ;;
  esac
}

# Prints the recorded pid if that process is alive and is still ours.
running_pid() {
  local f pid
  f="$(pid_file "$1")"
  [[ -f "$f" ]] || return 1
  pid="$(<"$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(cmd_marker "$1")" || return 1
  echo "$pid"
}

# stop_service NAME SIGNAL GRACE_SECONDS: signal the recorded pid, wait for it
# to exit, then SIGKILL it.
stop_service() {
  local name="$1" sig="$2" grace="$3" pid i
  if ! pid="$(running_pid "$name")"; then
    log "$name: not running"
    rm -f "$(pid_file "$name")"
    return 0
  fi
  log "$name: stopping pid $pid (SIG$sig)"
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 5; i++)); do
    [[ -d "/proc/$pid" ]] || break
    # A zombie has already exited; only its parent can reap it.
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && break
    sleep 0.2
  done
  if [[ -d "/proc/$pid" ]] && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]; then
    log "$name: still alive after ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
  fi
  rm -f "$(pid_file "$name")"
  log "$name: stopped"
}

# wait_for NAME SECONDS CHECK...: retry CHECK until it succeeds; give up early
# if the recorded process died.
wait_for() {
  local name="$1" secs="$2"
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    running_pid "$name" >/dev/null || die "$name exited during start-up; see its log under .local/"
    ((SECONDS < deadline)) || die "$name not ready after ${secs}s; see its log under .local/"
    sleep 1
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- postgres --

# Directory holding initdb, pg_ctl and postgres, installing them if needed.
pg_bin_dir() {
  local d
  d="$(command -v pg_ctl 2>/dev/null || true)"
  if [[ -n "$d" ]]; then
    d="$(dirname "$d")"
    if [[ -x "$d/initdb" && -x "$d/postgres" ]]; then echo "$d"; return; fi
  fi
  # Debian keeps the server binaries off PATH, in a versioned directory.
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$d" && -x "$d/initdb" && -x "$d/postgres" ]]; then echo "$d"; return; fi
  return 1
}

pg_install() {
  pg_bin_dir >/dev/null && return 0
  log "postgres: no server binaries found, installing Debian's postgresql"
  apt_install postgresql-common
  # Keep apt from creating (and starting) its own 'main' cluster on 5432:
  # we run our own instance under .local/.
  sed -i 's/^#*[[:space:]]*create_main_cluster.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
  apt_install postgresql
  pg_bin_dir >/dev/null || die "postgres: still no server binaries after install"
}

# A client tool: next to the server binaries if there, else on PATH
# (a server built into /usr/local may come without them).
pg_tool() {
  if [[ -x "$PG_BIN/$1" ]]; then echo "$PG_BIN/$1"; return; fi
  command -v "$1" 2>/dev/null || return 1
}

# Sets PG_BIN (server binaries), installing what is missing.
pg_find_bins() {
  pg_install
  PG_BIN="$(pg_bin_dir)"
  pg_tool psql >/dev/null && pg_tool pg_isready >/dev/null && return 0
  apt_install postgresql-client
  pg_tool psql >/dev/null && pg_tool pg_isready >/dev/null || die "postgres: no psql/pg_isready"
}

# postgres refuses to run as root, so as root we run it as the 'postgres' OS
# user; a normal account runs it as itself.
pg_user() { if is_root; then echo postgres; else id -un; fi; }

as_pg() {
  if is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

pg_socket_dir() {
  # A unix socket path must stay under ~107 bytes; fall back to /tmp for a
  # deeply nested checkout.
  local d="$PG_DIR/run"
  if ((${#d} + 20 > 100)); then d="/tmp/categorize-pg-$(id -u)-$PG_PORT"; fi
  echo "$d"
}

pg_prepare_user_and_dirs() {
  local sock
  sock="$(pg_socket_dir)"
  mkdir -p "$PG_DIR" "$sock"
  if is_root; then
    if ! id postgres >/dev/null 2>&1; then
      log "postgres: creating the 'postgres' OS user"
      useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin postgres
    fi
    # The postgres user must be able to reach .local/postgres: grant search
    # (x, not read) on any parent directory that lacks it.
    local p="$PG_DIR"
    while [[ "$p" != / ]]; do
      p="$(dirname "$p")"
      if ! (cd / && runuser -u postgres -- test -x "$p"); then
        log "postgres: adding o+x to $p so the postgres user can reach .local"
        chmod o+x "$p"
      fi
    done
    chown -R postgres: "$PG_DIR" "$sock"
  fi
  chmod 700 "$PG_DIR" "$sock"
}

pg_write_conf() {
  local sock
  sock="$(pg_socket_dir)"
  # Rewritten on each start so a changed PG_PORT takes effect.
  as_pg tee "$PG_DATA/categorize.conf" >/dev/null <<EOF
# Written by infra/local/services.sh on each start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$sock'
# Test instance: fsync off makes it faster; data still survives process
# restarts and kills (the OS keeps it), only not a power loss.
fsync = off
max_connections = 200
EOF
  grep -q "^include_if_exists = 'categorize.conf'" "$PG_DATA/postgresql.conf" ||
    echo "include_if_exists = 'categorize.conf'" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
}

pg_psql_super() {
  "$(pg_tool psql)" -X -q -v ON_ERROR_STOP=1 -h "$(pg_socket_dir)" -p "$PG_PORT" -U postgres -d postgres "$@"
}

pg_select_1() {
  [[ "$("$(pg_tool psql)" -X -tA "$(database_url)" -c 'select 1' 2>/dev/null)" == 1 ]]
}

pg_ready() {
  "$(pg_tool pg_isready)" -q -h 127.0.0.1 -p "$PG_PORT" && pg_select_1
}

pg_start() {
  pg_prepare_user_and_dirs
  # Our pid file was lost but the server is still running (postgres' own
  # postmaster.pid says so): adopt it instead of failing to start a second one.
  if [[ -f "$PG_DATA/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    log "postgres: adopting the server already running on this data dir"
    head -n 1 "$PG_DATA/postmaster.pid" >"$(pid_file postgres)"
    return 0
  fi
  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    log "postgres: initdb in .local/postgres/data"
    # Local socket connections are trusted (for the bootstrap below); TCP
    # connections need a password.
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C \
      --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$STATE/log/postgres-initdb.log"
  fi
  pg_write_conf
  log "postgres: starting $("$PG_BIN/postgres" --version) on 127.0.0.1:$PG_PORT"
  # pg_ctl daemonizes postgres; -w waits until it accepts connections.
  # 9>&-: the daemon must not inherit (and hold forever) our lock's fd.
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/postgres.log" -w -t 60 -s start 9>&- ||
    die "postgres: start failed; see .local/postgres/postgres.log"
  head -n 1 "$PG_DATA/postmaster.pid" >"$(pid_file postgres)"
}

pg_up() {
  pg_find_bins
  if running_pid postgres >/dev/null && pg_ready; then
    log "postgres: already up"
    return 0
  fi
  if ! running_pid postgres >/dev/null; then
    pg_start
  fi
  # Role and database are (re)asserted on every start: cheap and idempotent.
  pg_psql_super <<EOF
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD';
  ELSE
    ALTER ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD';
  END IF;
END \$\$;
EOF
  if [[ "$(pg_psql_super -tA -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]]; then
    pg_psql_super -c "CREATE DATABASE $DB_NAME OWNER $DB_USER"
  fi
  wait_for postgres 30 pg_ready
  log "postgres: ready (pid $(running_pid postgres))"
}

# SIGINT is postgres' "fast" shutdown; SIGTERM ("smart") would wait for every
# client (the app's pool) to disconnect first.
pg_down() { stop_service postgres INT 30; }

pg_status() {
  PG_BIN="$(pg_bin_dir 2>/dev/null || true)"
  running_pid postgres >/dev/null && pg_tool pg_isready >/dev/null &&
    "$(pg_tool pg_isready)" -q -h 127.0.0.1 -p "$PG_PORT"
}

# ------------------------------------------------------------------- kafka --

kafka_java() { java -cp "$KAFKA_LIBS/*" "$@"; }

kafka_pom() {
  # A throwaway pom whose only purpose is to resolve the broker's classpath.
  cat <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.categorize</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- the broker (kafka.Kafka, kafka.tools.StorageTool) -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- the CLI tools (TopicCommand) used for the readiness check -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- a logging backend: the slf4j binding and reload4j Kafka 3.9 ships -->
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>$SLF4J_VERSION</version></dependency>
    <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>$RELOAD4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
}

kafka_install() {
  command -v java >/dev/null && command -v mvn >/dev/null ||
    apt_install default-jre-headless maven
  # Reuse the jars unless they are incomplete or the pom changed.
  if [[ -f "$KAFKA_LIBS/.complete" ]] && cmp -s <(kafka_pom) "$KAFKA_DIR/pom.xml"; then
    return 0
  fi
  log "kafka: fetching Kafka $KAFKA_VERSION jars from Maven Central (first run only)"
  mkdir -p "$KAFKA_DIR"
  kafka_pom >"$KAFKA_DIR/pom.xml"
  rm -rf "$KAFKA_LIBS"
  mvn -B -Dstyle.color=never -f "$KAFKA_DIR/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" >"$STATE/log/kafka-mvn.log" 2>&1 || {
    tail -n 30 "$STATE/log/kafka-mvn.log" >&2
    die "kafka: could not fetch the jars (full log: .local/log/kafka-mvn.log)"
  }
  touch "$KAFKA_LIBS/.complete"
}

kafka_write_conf() {
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  # Single node acting as both broker and KRaft controller.
  cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by infra/local/services.sh on each start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=3
auto.create.topics.enable=false
# One broker: internal topics cannot have more than one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
# Tests should not wait 3s for each consumer group to form.
group.initial.rebalance.delay.ms=0
EOF
  cat >"$KAFKA_DIR/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
  # The CLI tools only need to report real problems.
  cat >"$KAFKA_DIR/tools-log4j.properties" <<'EOF'
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
  # Short client timeouts so one readiness probe cannot hang for a minute.
  cat >"$KAFKA_DIR/admin.properties" <<'EOF'
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
}

kafka_format() {
  [[ -f "$KAFKA_DIR/data/meta.properties" ]] && return 0
  # The cluster id is generated once and kept, so a re-format (e.g. after the
  # data dir was removed) reuses it.
  if [[ ! -s "$KAFKA_DIR/cluster-id" ]]; then
    kafka_java -Dlog4j.configuration="file:$KAFKA_DIR/tools-log4j.properties" \
      kafka.tools.StorageTool random-uuid >"$KAFKA_DIR/cluster-id"
  fi
  log "kafka: formatting storage (cluster id $(<"$KAFKA_DIR/cluster-id"))"
  kafka_java -Dlog4j.configuration="file:$KAFKA_DIR/tools-log4j.properties" \
    kafka.tools.StorageTool format -t "$(<"$KAFKA_DIR/cluster-id")" \
    -c "$KAFKA_DIR/server.properties" --ignore-formatted >/dev/null
}

# Ready = the broker answers a metadata request (list topics) on its port.
kafka_ready() {
  timeout 30 java -cp "$KAFKA_LIBS/*" \
    -Dlog4j.configuration="file:$KAFKA_DIR/tools-log4j.properties" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --command-config "$KAFKA_DIR/admin.properties" --list
}

kafka_up() {
  kafka_install
  if running_pid kafka >/dev/null && kafka_ready >/dev/null 2>&1; then
    log "kafka: already up"
    return 0
  fi
  kafka_write_conf
  kafka_format
  log "kafka: starting $KAFKA_VERSION (KRaft) on 127.0.0.1:$KAFKA_PORT"
  # setsid: own session, so the broker outlives this shell and its job control.
  setsid java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" \
    -Dkafka.logs.dir="$KAFKA_DIR/logs" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
    >>"$KAFKA_DIR/logs/server.log" 2>&1 </dev/null 9>&- &
  echo $! >"$(pid_file kafka)"
  wait_for kafka 120 kafka_ready
  log "kafka: ready (pid $(running_pid kafka))"
}

# SIGTERM makes the broker shut down cleanly (flushes, clean-shutdown marker).
kafka_down() { stop_service kafka TERM 60; }

kafka_status() { running_pid kafka >/dev/null && port_open "$KAFKA_PORT"; }

# ------------------------------------------------------------------- minio --

minio_bin() {
  if [[ -x "$BIN_DIR/minio" ]]; then echo "$BIN_DIR/minio"; return; fi
  command -v minio 2>/dev/null || return 1
}

minio_install() {
  minio_bin >/dev/null && return 0
  command -v go >/dev/null || die "minio: needs Go to build it (no minio binary found)"
  log "minio: building it with 'go install' into .local/bin (first run only, slow)"
  mkdir -p "$BIN_DIR"
  GOBIN="$BIN_DIR" go install github.com/minio/minio@latest
}

minio_ready() {
  [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
    "http://127.0.0.1:$MINIO_PORT/minio/health/ready")" == 200 ]]
}

minio_up() {
  minio_install
  if running_pid minio >/dev/null && minio_ready; then
    log "minio: already up"
    return 0
  fi
  mkdir -p "$MINIO_DIR/data"
  log "minio: starting on 127.0.0.1:$MINIO_PORT (console :$MINIO_CONSOLE_PORT)"
  # MINIO_UPDATE=off: no update checks, there is no network to check with.
  MINIO_ROOT_USER="$S3_ACCESS_KEY" MINIO_ROOT_PASSWORD="$S3_SECRET_KEY" MINIO_UPDATE=off \
    setsid "$(minio_bin)" server "$MINIO_DIR/data" --quiet \
    --address "127.0.0.1:$MINIO_PORT" --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" \
    >>"$MINIO_DIR/minio.log" 2>&1 </dev/null 9>&- &
  echo $! >"$(pid_file minio)"
  wait_for minio 60 minio_ready
  log "minio: ready (pid $(running_pid minio))"
}

minio_down() { stop_service minio TERM 30; }

minio_status() { running_pid minio >/dev/null && minio_ready; }

# -------------------------------------------------------------------- main --

svc_fn() {
  case "$1" in
    postgres) echo pg ;;
    kafka)    echo kafka ;;
    minio)    echo minio ;;
    *) die "unknown service '$1' (postgres|kafka|minio)" ;;
  esac
}

print_env() {
  case "$1" in
    postgres) echo "export DATABASE_URL=$(database_url)" ;;
    kafka)    echo "export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT" ;;
    minio)
      echo "export S3_ENDPOINT=http://127.0.0.1:$MINIO_PORT"
      echo "export S3_ACCESS_KEY=$S3_ACCESS_KEY"
      echo "export S3_SECRET_KEY=$S3_SECRET_KEY"
      echo "export S3_BUCKET=$S3_BUCKET"
      ;;
  esac
}

usage() {
  echo "usage: $0 up|down|status|env|restart [postgres|kafka|minio ...]" >&2
  exit 2
}

main() {
  [[ $# -ge 1 ]] || usage
  local cmd="$1" s rc=0
  shift
  case "$cmd" in up | down | status | env | restart) ;; *) usage ;; esac
  local names=("$@")
  [[ ${#names[@]} -gt 0 ]] || names=("${ALL_SERVICES[@]}")
  for s in "${names[@]}"; do svc_fn "$s" >/dev/null; done

  case "$cmd" in
    env)
      for s in "${names[@]}"; do print_env "$s"; done
      return 0
      ;;
    status)
      for s in "${names[@]}"; do
        if "$(svc_fn "$s")_status" 2>/dev/null; then
          echo "$s: up (pid $(running_pid "$s"))"
        else
          echo "$s: down"
          rc=3
        fi
      done
      return "$rc"
      ;;
  esac

  mkdir -p "$RUN_DIR" "$BIN_DIR" "$STATE/log"
  # One up/down/restart at a time. Daemons are started with 9>&- so they do
  # not inherit this lock.
  exec 9>"$STATE/run/lock"
  flock 9

  case "$cmd" in
    up)
      for s in "${names[@]}"; do "$(svc_fn "$s")_up"; done ;;
    down)
      # Reverse order: the message bus and store go before the database.
      for ((i = ${#names[@]} - 1; i >= 0; i--)); do "$(svc_fn "${names[i]}")_down"; done ;;
    restart)
      for s in "${names[@]}"; do "$(svc_fn "$s")_down"; "$(svc_fn "$s")_up"; done ;;
    *) usage ;;
  esac
}

main "$@"
