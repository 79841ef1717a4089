"""Validates Kubernetes manifests the way an API server would, with no API server.

Built-in kinds (Deployment, Service, ...) against the official schemas that `kubernetes-validate`
ships, strictly (an unknown field is an error). Custom resources against the OpenAPI v3 schema of
their CRD: aifn's Function (from the CRD aifn prints), KEDA's ScaledObject and
TriggerAuthentication, Gateway API's HTTPRoute (tests/k8s/crds/). Unknown fields in a custom
resource are errors too, as with kubectl's default strict field validation.

usage: validate.py --crd FILE... -- MANIFEST...   (prints one JSON line per object; exit 1 on any error)
"""
import json
import sys

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES = "1.37.0"


def strict(schema):
    """The schema with unknown properties refused where it lists properties."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    # OpenAPI's `nullable` is JSON Schema's null type.
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    return out


def crd_schemas(paths):
    schemas = {}
    for path in paths:
        for doc in yaml.safe_load_all(open(path)):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                # metadata is ObjectMeta, checked by the API server itself.
                schema = dict(schema)
                schema["properties"] = dict(schema["properties"])
                schema["properties"]["metadata"] = {"type": "object"}
                schemas[(f"{group}/{version['name']}", kind)] = strict(schema)
    return schemas


def main(argv):
    split = argv.index("--")
    crds = [a for a in argv[:split] if a != "--crd"]
    manifests = argv[split + 1:]
    schemas = crd_schemas(crds)
    failed = False
    for path in manifests:
        for doc in yaml.safe_load_all(open(path)):
            if not doc:
                continue
            key = (doc.get("apiVersion"), doc.get("kind"))
            name = doc.get("metadata", {}).get("name")
            result = {"file": path, "kind": key[1], "name": name}
            try:
                if key in schemas:
                    jsonschema.validate(doc, schemas[key])
                    result["against"] = f"CRD {key[0]}"
                else:
                    kubernetes_validate.validate(doc, KUBERNETES, strict=True)
                    result["against"] = f"Kubernetes {KUBERNETES} (strict)"
                result["valid"] = True
            except Exception as e:  # noqa: BLE001 - every failure is reported the same way
                failed = True
                result["valid"] = False
                result["error"] = str(e).splitlines()[0][:500]
            print(json.dumps(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
