#!/usr/bin/env bash
# Renders every kustomize overlay of infra/k8s and validates the result offline
# with kubeconform -strict against the Kubernetes JSON schemas; validates the
# operator examples (infra/k8s/operators) against their CRD schemas. Exits
# non-zero on any error.
#
#   infra/k8s/validate.sh                 install missing tools, then validate
#   infra/k8s/validate.sh install         install the tools and schemas only
#   infra/k8s/validate.sh --tools-ready   exit 0 if every tool is installed (installs nothing)
#
# Environment:
#   K8S_DIR        manifest tree to validate (default: this script's directory);
#                  the tests point it at a copy with a deliberate error.
#   KUBE_VERSIONS  Kubernetes versions to validate against (default "1.31.0 1.37.0":
#                  the oldest release the manifests target and the newest schema set).
#   NO_INSTALL=1   never install; fail if a tool is missing.
#   Run time: ~5 s with the tools installed (2 cores).
#
# Tools, all in <repo>/.local (gitignored), all from package registries only:
#   kubeconform  Go build (infra/local/tools.sh kubeconform, or go install)
#   kustomize    Go build of sigs.k8s.io/kustomize/kustomize/v5 (pinned below)
#   schemas      PyPI kubernetes-validate (pinned), converted by tools/k8s_schemas.py
#   CRD schemas  npm @kubernetes-models/{cloudnative-pg,strimzi-kafka-operator}:
#                validators generated from the operators' CRD OpenAPI schemas
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
K8S_DIR="$(cd "${K8S_DIR:-$SCRIPT_DIR}" && pwd)"
LOCAL="$REPO_ROOT/.local"
BIN_DIR="$LOCAL/bin"
VENV="$LOCAL/venv"
SCHEMA_DIR="$LOCAL/k8s-schemas"
CRD_MODELS="$LOCAL/k8s-crd-models"
WORK=""   # per-run directory for the rendered overlays (removed on exit)

KUBE_VERSIONS="${KUBE_VERSIONS:-1.31.0 1.37.0}"
KUSTOMIZE_VERSION="v5.8.2"            # v5.8.3 needs Go >= 1.27
KUBERNETES_VALIDATE_VERSION="1.37.0"  # ships schemas for Kubernetes 1.25 .. 1.37

# Kinds validated by the CRD step instead of kubeconform, and kinds that have
# no schema available offline at all (reported as skipped, not as valid).
CRD_KINDS="Cluster,ScheduledBackup,Backup,Pooler,Kafka,KafkaNodePool,KafkaTopic,KafkaUser"
NO_SCHEMA_KINDS="ObjectStore"

KUBECONFORM="$BIN_DIR/kubeconform"
KUSTOMIZE="$BIN_DIR/kustomize"

log() { printf '[k8s-validate] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

schemas_ready() {
  local v
  for v in $KUBE_VERSIONS; do
    [[ -f "$SCHEMA_DIR/v${v#v}-standalone-strict/deployment-apps-v1.json" ]] || return 1
  done
}
crd_models_ready() { [[ -d "$CRD_MODELS/node_modules/@kubernetes-models/strimzi-kafka-operator" && -d "$CRD_MODELS/node_modules/yaml" ]]; }

tools_ready() {
  local missing=()
  [[ -x "$KUBECONFORM" ]] || missing+=(kubeconform)
  [[ -x "$KUSTOMIZE" ]] || missing+=(kustomize)
  schemas_ready || missing+=(kubernetes-schemas)
  crd_models_ready || missing+=(crd-models)
  command -v node >/dev/null || missing+=(node)
  if ((${#missing[@]})); then
    log "missing: ${missing[*]} (run: infra/k8s/validate.sh install)"
    return 1
  fi
}

install_kubeconform() {
  [[ -x "$KUBECONFORM" ]] && return 0
  if [[ -x "$REPO_ROOT/infra/local/tools.sh" ]]; then
    "$REPO_ROOT/infra/local/tools.sh" kubeconform
  else
    command -v go >/dev/null || die "go is required to build kubeconform"
    log "building kubeconform"
    GOBIN="$BIN_DIR" go install github.com/yannh/kubeconform/cmd/kubeconform@latest
  fi
}

install_kustomize() {
  [[ -x "$KUSTOMIZE" ]] && return 0
  command -v go >/dev/null || die "go is required to build kustomize"
  log "building kustomize $KUSTOMIZE_VERSION (a minute or two the first time)"
  mkdir -p "$BIN_DIR"
  GOBIN="$BIN_DIR" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
}

install_schemas() {
  schemas_ready && return 0
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating the Python venv $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
    log "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION (the schemas it ships)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  fi
  local src
  src="$("$VENV/bin/python" -c 'import os, kubernetes_validate as k; print(os.path.join(os.path.dirname(k.__file__), "kubernetes-json-schema"))')"
  # shellcheck disable=SC2086  # word splitting of the version list is intended
  "$VENV/bin/python" "$SCRIPT_DIR/tools/k8s_schemas.py" "$src" "$SCHEMA_DIR" $KUBE_VERSIONS
}

install_crd_models() {
  crd_models_ready && return 0
  log "installing the CRD validators (npm) into $CRD_MODELS"
  mkdir -p "$CRD_MODELS"
  cp "$SCRIPT_DIR/tools/crd-models/package.json" "$SCRIPT_DIR/tools/crd-models/package-lock.json" "$CRD_MODELS/"
  # The packages declare node >= 22; they are plain ES modules and run on 20.
  (cd "$CRD_MODELS" && npm ci --no-audit --no-fund --engine-strict=false --loglevel=error)
}

install_all() {
  mkdir -p "$BIN_DIR"
  install_kubeconform
  install_kustomize
  install_schemas
  install_crd_models
}

kubeconform_run() {
  local version="$1"; shift
  "$KUBECONFORM" -strict -summary -output text \
    -kubernetes-version "$version" \
    -schema-location "$SCHEMA_DIR/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    "$@"
}

# Validates the CRD kinds of the given YAML files with the generated validators.
# Unknown kinds in NO_SCHEMA_KINDS are reported as skipped; any other kind that
# is neither built in nor known here is an error.
validate_crds() {
  # The script is written next to the installed packages so that its bare
  # specifiers resolve from $CRD_MODELS/node_modules.
  cat >"$CRD_MODELS/validate-crds.mjs" <<'EOF'
import { readFileSync } from "node:fs";
import YAML from "yaml";

const models = {
  "postgresql.cnpg.io/v1": () => import("@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1"),
  "kafka.strimzi.io/v1": () => import("@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1"),
  "kafka.strimzi.io/v1beta2": () => import("@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1beta2"),
};
const crdKinds = new Set(process.env.CRD_KINDS.split(","));
const noSchema = new Set(process.env.NO_SCHEMA_KINDS.split(","));
let valid = 0, invalid = 0, skipped = 0;
for (const file of process.argv.slice(2)) {
  const docs = YAML.parseAllDocuments(readFileSync(file, "utf8"), { uniqueKeys: true });
  for (const doc of docs) {
    if (doc.errors.length) { console.log(`${file} - YAML error: ${doc.errors[0].message}`); invalid++; continue; }
    const obj = doc.toJS();
    if (!obj) continue;
    const where = `${file} - ${obj.kind} ${obj.metadata?.name ?? "?"}`;
    if (noSchema.has(obj.kind)) { console.log(`${where} skipped: no CRD schema available offline`); skipped++; continue; }
    if (!crdKinds.has(obj.kind)) continue; // built-in kinds: kubeconform's job
    const load = models[obj.apiVersion];
    if (!load) { console.log(`${where} is invalid: no CRD schema for apiVersion ${obj.apiVersion}`); invalid++; continue; }
    const Model = (await load())[obj.kind];
    if (typeof Model !== "function") { console.log(`${where} is invalid: ${obj.apiVersion} has no kind ${obj.kind}`); invalid++; continue; }
    try {
      new Model(obj).validate();
      valid++;
    } catch (err) {
      console.log(`${where} is invalid: ${err instanceof Error ? err.message : String(err)}`);
      invalid++;
    }
  }
}
console.log(`CRD summary: Valid: ${valid}, Invalid: ${invalid}, Skipped: ${skipped}`);
process.exitCode = invalid > 0 ? 1 : 0;
EOF
  CRD_KINDS="$CRD_KINDS" NO_SCHEMA_KINDS="$NO_SCHEMA_KINDS" node "$CRD_MODELS/validate-crds.mjs" "$@"
}

validate() {
  local t0=$SECONDS failed=0 overlay name out version
  mkdir -p "$LOCAL/tmp"
  WORK="$(mktemp -d "$LOCAL/tmp/k8s-validate.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
  [[ -d "$K8S_DIR/base" ]] || die "no base/ in $K8S_DIR"
  local targets=("$K8S_DIR/base") rendered=()
  for overlay in "$K8S_DIR"/overlays/*/; do
    targets+=("${overlay%/}")
  done
  for overlay in "${targets[@]}"; do
    name="${overlay#"$K8S_DIR"/}"
    out="$WORK/${name//\//_}.yaml"
    log "kustomize build $name"
    if ! "$KUSTOMIZE" build "$overlay" >"$out"; then
      log "FAIL: kustomize build $name"
      failed=1
      continue
    fi
    rendered+=("$out")
  done

  local files=()
  if [[ -d "$K8S_DIR/operators" ]]; then
    mapfile -t files < <(find "$K8S_DIR/operators" -name '*.yaml' | sort)
  fi

  # One kubeconform process per Kubernetes version (schemas compile once).
  for version in $KUBE_VERSIONS; do
    if ((${#rendered[@]})); then
      log "kubeconform -strict ${rendered[*]#"$WORK"/} (Kubernetes $version)"
      kubeconform_run "$version" "${rendered[@]}" || { log "FAIL: rendered manifests on Kubernetes $version"; failed=1; }
    fi
    if ((${#files[@]})); then
      log "kubeconform -strict operators/ built-in kinds (Kubernetes $version)"
      kubeconform_run "$version" -skip "$CRD_KINDS,$NO_SCHEMA_KINDS" "${files[@]}" || { log "FAIL: operators on Kubernetes $version"; failed=1; }
    fi
  done
  if ((${#files[@]})); then
    log "CRD schemas: operators/"
    validate_crds "${files[@]}" || { log "FAIL: operators CRD validation"; failed=1; }
  fi

  if ((failed)); then
    log "validation FAILED ($((SECONDS - t0))s)"
    return 1
  fi
  log "all manifests valid ($((SECONDS - t0))s)"
}

main() {
  case "${1:-}" in
    --tools-ready) tools_ready ;;
    install) install_all ;;
    "")
      if ! tools_ready 2>/dev/null; then
        [[ "${NO_INSTALL:-}" == 1 ]] && { tools_ready; exit 1; }
        install_all
      fi
      validate
      ;;
    *) die "usage: $0 [install|--tools-ready]" ;;
  esac
}

main "$@"
