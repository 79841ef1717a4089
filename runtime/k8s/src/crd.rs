//! The `Function` CustomResourceDefinition (`functions.ai.function`). Its schema is generated from
//! the spec's own types (`aifn_spec::FunctionBody`, through `schemars`), then made what Kubernetes
//! calls structural: inline, no `$ref`, `nullable` for optional fields.
//!
//! The API server checks shapes and types with it, so `kubectl apply` refuses a misspelt field at
//! once. It requires only what the validator requires and never more; the operator runs the
//! validator itself and reports what it says (with the field) in the `Ready` condition.

use crate::{Object, GROUP, VERSION};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

/// Fields the validator requires, by the schema path of their object (`[]` for a list's items).
/// `tests` check each: removing it from a valid spec fails validation.
pub const REQUIRED: [(&str, &[&str]); 4] = [
    ("", &["model", "endpoints"]),
    ("model", &["id", "runtime"]),
    ("endpoints[]", &["route"]),
    ("module", &["path"]),
];

/// The CRD that makes `kind: Function` a Kubernetes resource.
pub fn function_crd() -> Object {
    let printer =
        |name: &str, path: &str| json!({ "name": name, "type": "string", "jsonPath": path });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("functions.{GROUP}"),
            "labels": { crate::MANAGED_BY_LABEL: crate::MANAGED_BY },
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": "Function",
                "listKind": "FunctionList",
                "plural": "functions",
                "singular": "function",
                "shortNames": ["fn"],
                "categories": ["aifn"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "additionalPrinterColumns": [
                    printer("Stable", ".status.stable"),
                    printer("Candidate", ".status.candidate"),
                    printer("Weight", ".status.candidateWeight"),
                    printer("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
                    { "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" },
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "description": "An AI function: a model, an optional WASM module, endpoints, scaling and rollouts (spec/function.md).",
                        "required": ["spec"],
                        "properties": {
                            "apiVersion": { "type": "string" },
                            "kind": { "type": "string" },
                            "metadata": { "type": "object" },
                            "spec": spec_schema(),
                            "status": {
                                "type": "object",
                                "description": "Written by the operator: the versions serving, the rollout, conditions.",
                                "x-kubernetes-preserve-unknown-fields": true,
                            },
                        },
                    },
                },
            }],
        },
    })
}

/// The schema of a Function's `spec`, from the spec types.
pub fn spec_schema() -> Object {
    let generator = SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let schema = generator.into_root_schema_for::<aifn_spec::FunctionBody>();
    let mut value = schema.to_value();
    if let Value::Object(map) = &mut value {
        map.remove("$schema");
        map.remove("title");
        map.remove("components");
    }
    structural(&mut value, "");
    value
}

/// Makes a generated schema structural, and its `required` lists those of [`REQUIRED`].
fn structural(node: &mut Value, path: &str) {
    let Value::Object(map) = node else { return };
    // An optional field is `nullable`, never an `anyOf` with a null choice.
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(choices)) = map.get(key).cloned() {
            let (null, others): (Vec<Value>, Vec<Value>) = choices.into_iter().partition(|c| {
                c.get("type") == Some(&json!("null")) || c.get("enum") == Some(&json!([null]))
            });
            if !null.is_empty() {
                map.remove(key);
                map.insert("nullable".into(), json!(true));
                if let [Value::Object(only)] = others.as_slice() {
                    for (k, v) in only {
                        map.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                } else {
                    map.insert(key.into(), json!(others));
                }
            }
        }
    }
    // Documented unit variants come as one choice each: one string enum for Kubernetes.
    if let Some(Value::Array(choices)) = map.get("oneOf").cloned() {
        let names: Option<Vec<Value>> = choices
            .iter()
            .map(|c| match (c.get("type"), c.get("enum")) {
                (Some(t), Some(Value::Array(e))) if t == "string" && e.len() == 1 => {
                    Some(e[0].clone())
                }
                _ => None,
            })
            .collect();
        if let Some(names) = names {
            map.remove("oneOf");
            map.insert("type".into(), json!("string"));
            map.insert("enum".into(), json!(names));
        }
    }
    // Whole numbers: Kubernetes knows `int32`/`int64`, not schemars' `uint32`.
    if let Some(Value::String(format)) = map.get("format") {
        if format.starts_with("uint") {
            map.remove("format");
            map.insert("minimum".into(), json!(0));
        }
    }
    // An optional field is `nullable`, never a `type` list or an `anyOf` with null.
    if let Some(Value::Array(types)) = map.get("type").cloned() {
        let named: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
        if let [only] = named.as_slice() {
            map.insert("type".into(), only.clone());
            map.insert("nullable".into(), json!(true));
        }
    }
    let required: Vec<&str> = REQUIRED
        .iter()
        .find(|(at, _)| *at == path)
        .map(|(_, fields)| fields.to_vec())
        .unwrap_or_default();
    if required.is_empty() {
        map.remove("required");
    } else {
        map.insert("required".into(), json!(required));
    }
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            structural(property, &child);
        }
    }
    if let Some(items) = map.get_mut("items") {
        structural(items, &format!("{path}[]"));
    }
    if let Some(values) = map.get_mut("additionalProperties") {
        structural(values, &format!("{path}{{}}"));
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(choices)) = map.get_mut(key) {
            for choice in choices {
                structural(choice, path);
            }
        }
    }
    drop_empty(map);
}

fn drop_empty(map: &mut Map<String, Value>) {
    if map.get("additionalProperties") == Some(&json!(true)) {
        map.remove("additionalProperties");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node says its type (or is int-or-string), and nothing refers elsewhere.
    fn assert_structural(node: &Value, path: &str) {
        let Value::Object(map) = node else { return };
        assert!(!map.contains_key("$ref"), "{path}: $ref");
        let typed = map.contains_key("type")
            || map.contains_key("x-kubernetes-int-or-string")
            || map.contains_key("x-kubernetes-preserve-unknown-fields");
        assert!(typed, "{path} has no type: {node}");
        if let Some(Value::Object(properties)) = map.get("properties") {
            for (name, p) in properties {
                assert_structural(p, &format!("{path}.{name}"));
            }
        }
        if let Some(items) = map.get("items") {
            assert_structural(items, &format!("{path}[]"));
        }
    }

    /// The CRD never requires more than the validator: without each field it lists, a valid
    /// spec fails validation.
    #[test]
    fn every_required_field_is_required_by_the_validator() {
        let valid = "apiVersion: ai.function/v1
kind: Function
metadata: { name: f }
spec:
  model: { id: m, runtime: onnx }
  module: { path: m.wasm }
  endpoints:
    - { route: /v1/f, method: POST, auth: none }
";
        assert!(aifn_spec::parse(valid).is_ok());
        let without = [
            (
                "model",
                valid.replace("  model: { id: m, runtime: onnx }\n", ""),
            ),
            (
                "endpoints",
                valid.replace(
                    "  endpoints:\n    - { route: /v1/f, method: POST, auth: none }\n",
                    "",
                ),
            ),
            ("model.id", valid.replace("id: m, ", "")),
            ("model.runtime", valid.replace(", runtime: onnx", "")),
            ("endpoints[].route", valid.replace("route: /v1/f, ", "")),
            (
                "module.path",
                valid.replace("{ path: m.wasm }", "{ timeout: 1s }"),
            ),
        ];
        for (field, text) in without {
            assert!(
                aifn_spec::parse(&text).is_err(),
                "the validator takes a spec without {field}"
            );
        }
        let listed: usize = REQUIRED.iter().map(|(_, fields)| fields.len()).sum();
        assert_eq!(listed, 6);
    }

    #[test]
    #[ignore = "prints the schema"]
    fn print_schema() {
        println!("{}", serde_json::to_string_pretty(&spec_schema()).unwrap());
    }

    #[test]
    fn the_spec_schema_is_structural_and_names_every_field_the_validator_knows() {
        let schema = spec_schema();
        assert_structural(&schema, "spec");
        let properties = schema["properties"].as_object().unwrap();
        for field in [
            "model",
            "resources",
            "scaling",
            "endpoints",
            "module",
            "fallback",
            "rollout",
            "v2",
            "check",
            "monitoring",
        ] {
            assert!(properties.contains_key(field), "spec.{field}");
        }
        assert_eq!(schema["required"], json!(["model", "endpoints"]));
        let cpu = &schema["properties"]["resources"]["properties"]["cpu"];
        assert_eq!(cpu["x-kubernetes-int-or-string"], json!(true), "{cpu}");
        let method = &schema["properties"]["endpoints"]["items"]["properties"]["method"];
        assert!(method["enum"].as_array().unwrap().contains(&json!("POST")));
    }
}
