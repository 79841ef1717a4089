//! The `ai.function/v1` Function spec.
//!
//! Reading a spec goes in two steps: [`yaml::parse`] reads the text into a tree that remembers the
//! line and column of every node, and [`validate`] walks it into a [`FunctionSpec`], collecting every
//! error (unknown keys, wrong types, bad quantities and durations, inconsistent scaling, bad or
//! duplicate routes) with its field path and position instead of stopping at the first.

pub mod quantity;
mod schema;
pub mod types;
pub mod validate;
pub mod yaml;

pub use quantity::{Bytes, HumanDuration, MilliCpu};
pub use types::*;

use std::fmt;

/// One problem in a spec, located by field path and 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpecError {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(
            f,
            "{}:{}: {}: {}",
            self.line, self.column, path, self.message
        )
    }
}

/// Every problem found in a spec, in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(transparent)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Parses and validates a Function spec from YAML text.
pub fn parse(source: &str) -> Result<FunctionSpec, SpecErrors> {
    let root = yaml::parse(source).map_err(|e| {
        SpecErrors(vec![SpecError {
            path: String::new(),
            line: e.pos.line,
            column: e.pos.column,
            message: format!("YAML syntax error: {}", e.message),
        }])
    })?;
    validate::function_spec(&root)
}

/// Renders a valid spec back to YAML (normalised: defaults filled in, quantities in canonical units).
pub fn to_yaml(spec: &FunctionSpec) -> String {
    serde_yaml::to_string(spec).unwrap_or_else(|e| format!("# cannot render spec: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"apiVersion: ai.function/v1
kind: Function
metadata:
  name: sentiment-analyzer
  labels:
    domain: nlp
spec:
  model:
    id: sentiment_model_v3
    runtime: python:3.11-pytorch
  resources:
    memory: 2Gi
    cpu: "1"
    gpu: "1"
  scaling:
    min_replicas: 2
    max_replicas: 200
    target_latency: 50ms
  endpoints:
    - route: /v1/sentiment
      method: POST
      auth: api_key
"#;

    #[test]
    fn the_example_from_the_brief_is_valid() {
        let spec = parse(EXAMPLE).unwrap();
        assert_eq!(spec.metadata.name, "sentiment-analyzer");
        assert_eq!(spec.metadata.labels["domain"], "nlp");
        assert_eq!(spec.spec.model.id, "sentiment_model_v3");
        assert_eq!(spec.spec.model.runtime.framework, Framework::Pytorch);
        assert_eq!(spec.spec.resources.memory, Some(Bytes(2 << 30)));
        assert_eq!(spec.spec.resources.cpu, Some(MilliCpu(1000)));
        assert_eq!(spec.spec.resources.gpu, 1);
        assert_eq!(spec.spec.scaling.min_replicas, 2);
        assert_eq!(spec.spec.scaling.max_replicas, 200);
        assert_eq!(
            spec.spec.scaling.target_latency,
            Some(HumanDuration(std::time::Duration::from_millis(50)))
        );
        assert_eq!(spec.spec.endpoints[0].route, "/v1/sentiment");
        assert_eq!(spec.spec.endpoints[0].method, Method::Post);
        assert_eq!(spec.spec.endpoints[0].auth, Auth::ApiKey);
        assert!(spec.spec.module.is_none());
    }

    #[test]
    fn normalised_yaml_parses_back_to_the_same_spec() {
        let spec = parse(EXAMPLE).unwrap();
        let yaml = to_yaml(&spec);
        // Normal form has `module: null`, which means "absent".
        assert_eq!(parse(&yaml).unwrap(), spec, "{yaml}");
    }

    #[test]
    fn every_error_is_reported_not_just_the_first() {
        let bad = EXAMPLE
            .replace("memory: 2Gi", "memory: 2GB")
            .replace("target_latency: 50ms", "target_latency: 50")
            .replace("method: POST", "method: post");
        let errors = parse(&bad).unwrap_err();
        let paths: Vec<_> = errors.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.resources.memory",
                "spec.scaling.target_latency",
                "spec.endpoints[0].method"
            ]
        );
        assert_eq!((errors.0[0].line, errors.0[0].column), (12, 13));
    }
}
