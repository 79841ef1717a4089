//! JSON schemas of the spec's types written as strings (quantities, durations, tagged choices),
//! for the Kubernetes CRD of `Function` (`aifn k8s crd`). Derived types get theirs from
//! `schemars`; these say what the validator accepts in the text.

use crate::quantity::{Bytes, HumanDuration, MilliCpu};
use crate::types::{JwtKeys, ModelRuntime, Sticky};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

/// A type written as one string, described and (where it helps) constrained by a pattern.
macro_rules! string_schema {
    ($t:ty, $description:expr, $pattern:expr) => {
        impl JsonSchema for $t {
            fn schema_name() -> Cow<'static, str> {
                stringify!($t).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                match $pattern {
                    Some(pattern) => json_schema!({
                        "type": "string",
                        "description": $description,
                        "pattern": pattern,
                    }),
                    None => json_schema!({ "type": "string", "description": $description }),
                }
            }
        }
    };
}

/// A quantity the spec takes as a number or a string (`2Gi`, `500m`), like Kubernetes' own.
macro_rules! int_or_string_schema {
    ($t:ty, $description:expr) => {
        impl JsonSchema for $t {
            fn schema_name() -> Cow<'static, str> {
                stringify!($t).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "description": $description,
                    "x-kubernetes-int-or-string": true,
                    "anyOf": [{ "type": "integer" }, { "type": "string" }],
                })
            }
        }
    };
}

string_schema!(
    HumanDuration,
    "A duration: numbers with units (ns, us, ms, s, m, h, d), e.g. `50ms` or `1m30s`.",
    Some("^\\s*([0-9.]+(ns|us|µs|ms|s|m|h|d))+\\s*$")
);
string_schema!(
    Sticky,
    "`none`, `caller` or `header:NAME`.",
    Some("^(none|caller|header:.+)$")
);
string_schema!(
    JwtKeys,
    "`host`, `discovery` or a JWKS URL (https://...).",
    Some("^(host|discovery|https?://.+)$")
);
string_schema!(
    ModelRuntime,
    "What the model was made with: FRAMEWORK or python:X.Y-FRAMEWORK (e.g. `python:3.11-pytorch`).",
    None::<&str>
);
int_or_string_schema!(
    Bytes,
    "A size in bytes, or with a unit (`512Mi`, `2Gi`, `1G`)."
);
int_or_string_schema!(
    MilliCpu,
    "CPUs, whole or in thousandths (`1`, `\"1\"`, `500m`)."
);

/// A whole number the spec also takes quoted (`gpu: "1"`, as Kubernetes writes quantities).
pub(crate) struct WholeNumber;
int_or_string_schema!(WholeNumber, "A whole number, or the same in quotes.");
