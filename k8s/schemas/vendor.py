"""Rebuild the vendored schemas in this folder (maintainers only; the tests read the JSON files).

    python k8s/schemas/vendor.py --rayjob-crd ray.io_rayjobs.yaml --k8s-schemas v1.30.0-local-strict

``--rayjob-crd``: KubeRay's RayJob CRD (``ray-operator/config/crd/bases/ray.io_rayjobs.yaml``
of the KubeRay release in README.md). ``--k8s-schemas``: a folder of Kubernetes' JSON
schemas in the "local-strict" layout of yannh/kubernetes-json-schema (one file per kind,
``$ref``s into ``_definitions.json``), e.g. the one the ``kubernetes-validate`` package ships.

What "compacted" means here, and why each step keeps the schema honest:

- only what the manifests use: the RayJob's ``spec`` (no ``status``) and four Kubernetes kinds;
- ``$ref``s inlined, giving standalone schemas (what ``-standalone-strict`` publishes);
- ``description`` and ``x-kubernetes-*`` annotations dropped: jsonschema ignores them;
- subschemas that occur more than once (the pod template of the head, the workers and the
  submitter) stored once under ``$defs`` and ``$ref``'d (:func:`share_repeats`);
- the CRD made strict: every object schema that lists ``properties`` and does not say
  ``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``. The API
  server prunes or (``kubectl apply``'s default ``--validate=strict``) rejects unknown
  fields of a custom resource; without this a misspelled key would pass the test.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterator

import yaml

HERE = Path(__file__).resolve().parent
KINDS = {"deployment-apps-v1.json": "Deployment", "service-v1.json": "Service",
         "persistentvolumeclaim-v1.json": "PersistentVolumeClaim", "configmap-v1.json": "ConfigMap"}
SCHEMA_MAPS = ("properties", "patternProperties", "definitions", "$defs")
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
SCHEMA_ONE = ("items", "additionalProperties", "not")


def compact(node: Any, definitions: dict, strict: bool) -> Any:
    """A copy of schema ``node`` with refs inlined and annotations dropped (see the module docstring)."""
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]  # "_definitions.json#/definitions/X" or ".../#/$defs/X"
        return compact(definitions[name], definitions, strict)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("description", "$schema", "$id") or key.startswith("x-kubernetes-"):
            continue
        if key in SCHEMA_MAPS:
            out[key] = {name: compact(child, definitions, strict) for name, child in value.items()}
        elif key in SCHEMA_LISTS:
            out[key] = [compact(child, definitions, strict) for child in value]
        elif key in SCHEMA_ONE and isinstance(value, dict):
            out[key] = compact(value, definitions, strict)
        else:
            out[key] = value
    if strict and "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def share_repeats(schema: dict, min_bytes: int = 4000) -> dict:
    """Store each large subschema that occurs more than once under ``$defs``, once; largest first,
    so a repeated pod template is shared whole rather than piece by piece. Only schemas are
    shared, never a ``properties`` map (a ``$ref`` there would be read as a field named "$ref")."""
    def schemas(node: Any) -> Iterator[dict]:
        """Every subschema of ``node`` (itself included), walking the schema keywords only."""
        if not isinstance(node, dict):
            return
        yield node
        for key, value in node.items():
            if key in SCHEMA_MAPS:
                for child in value.values():
                    yield from schemas(child)
            elif key in SCHEMA_LISTS:
                for child in value:
                    yield from schemas(child)
            elif key in SCHEMA_ONE:
                yield from schemas(value)

    counts: dict[str, int] = {}
    for node in schemas(schema):
        text = json.dumps(node, sort_keys=True)
        if len(text) >= min_bytes:
            counts[text] = counts.get(text, 0) + 1
    repeated = sorted((text for text, count in counts.items() if count > 1), key=len, reverse=True)
    names = {text: f"shared{i}" for i, text in enumerate(repeated)}

    def replace(node: Any, top: bool = False) -> Any:
        if not isinstance(node, dict):
            return node
        if not top and json.dumps(node, sort_keys=True) in names:
            return {"$ref": f"#/$defs/{names[json.dumps(node, sort_keys=True)]}"}
        out = {}
        for key, value in node.items():
            if key in SCHEMA_MAPS:
                out[key] = {name: replace(child) for name, child in value.items()}
            elif key in SCHEMA_LISTS:
                out[key] = [replace(child) for child in value]
            elif key in SCHEMA_ONE:
                out[key] = replace(value)
            else:
                out[key] = value
        return out

    out = replace(schema, top=True)
    defs = {name: replace(json.loads(text), top=True) for text, name in names.items()}
    used = json.dumps(out) + json.dumps(defs)
    out["$defs"] = {name: d for name, d in defs.items() if f'"#/$defs/{name}"' in used}
    return out


def rayjob_schema(crd_path: Path) -> dict:
    crd = yaml.safe_load(crd_path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = version["schema"]["openAPIV3Schema"]
    schema = {**schema, "properties": {k: v for k, v in schema["properties"].items() if k != "status"}}
    out = compact(schema, {}, strict=True)
    out["properties"]["apiVersion"]["enum"] = ["ray.io/v1"]
    out["properties"]["kind"]["enum"] = ["RayJob"]
    return share_repeats(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rayjob-crd", type=Path, required=True)
    p.add_argument("--k8s-schemas", type=Path, required=True)
    args = p.parse_args()
    shared = json.loads((args.k8s_schemas / "_definitions.json").read_text())
    definitions = shared.get("definitions") or shared["$defs"]
    outputs = {"rayjob-ray-v1.json": rayjob_schema(args.rayjob_crd)}
    for name in KINDS:
        outputs[name] = compact(json.loads((args.k8s_schemas / name).read_text()), definitions, strict=False)
    for name, schema in outputs.items():
        (HERE / name).write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n")
        print(f"{name}: {(HERE / name).stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
