//! `aifn new --model FILE`: a module skeleton for a real model, in any SDK language, with the
//! model's input names, types and shapes filled in. It builds, deploys and answers as written:
//! preprocess gives the model zeros of the declared shapes (a dimension of any size as 1), and the
//! host answers with the outputs as v2 JSON. The places to write real code say so.

use aifn_model::{Dim, ModelFacts, PortFacts};
use aifn_spec::Language;
use anyhow::bail;
use std::fmt::Write as _;

/// One input as the skeleton makes it.
struct Input<'a> {
    port: &'a PortFacts,
    /// `f32`, `i64`, ...: the SDKs' names for the element type.
    kind: &'static str,
    /// The declared shape, with 1 for each dimension of any size.
    shape: Vec<u64>,
}

impl Input<'_> {
    fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    fn shape_list(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(u64::to_string).collect();
        dims.join(", ")
    }

    /// `input_ids: tensor(int64) [batch, sequence]` for the comment above it.
    fn declared(&self) -> String {
        let dims: Vec<String> = self.port.shape.iter().map(Dim::to_string).collect();
        format!(
            "{}: {} [{}]",
            self.port.name,
            self.port.onnx_type,
            dims.join(", ")
        )
    }
}

/// The SDKs' element type for a v2 datatype, if modules of `language` can make it.
fn kind(datatype: &str, language: Language) -> Option<&'static str> {
    let kind = match datatype {
        "FP32" => "f32",
        "FP64" => "f64",
        "INT32" => "i32",
        "INT64" => "i64",
        "UINT8" => "u8",
        "BOOL" => "bool",
        "BYTES" => "string",
        _ => return None,
    };
    // The C, Zig and AssemblyScript SDKs make numeric tensors only.
    let numeric_only = matches!(
        language,
        Language::C | Language::Zig | Language::AssemblyScript
    );
    (!numeric_only || !matches!(kind, "bool" | "string")).then_some(kind)
}

fn inputs(facts: &ModelFacts, language: Language) -> anyhow::Result<Vec<Input<'_>>> {
    if !facts.problems.is_empty() {
        bail!(
            "the host cannot serve this model as it is: {}",
            facts.problems.join("; ")
        );
    }
    facts
        .inputs
        .iter()
        .map(|port| {
            let datatype = port.datatype.as_deref().unwrap_or("?");
            let Some(kind) = kind(datatype, language) else {
                bail!(
                    "input `{}` is {}, which a {language} module cannot make (rust and python make every type the host takes)",
                    port.name,
                    port.onnx_type
                );
            };
            let shape = port
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n as u64,
                    _ => 1,
                })
                .collect();
            Ok(Input { port, kind, shape })
        })
        .collect()
}

/// The outputs, for the comments that say how to read them.
fn output_list(facts: &ModelFacts) -> String {
    let outputs: Vec<String> = facts
        .outputs
        .iter()
        .map(|p| {
            let dims: Vec<String> = p.shape.iter().map(Dim::to_string).collect();
            format!("`{}` {} [{}]", p.name, p.onnx_type, dims.join(", "))
        })
        .collect();
    outputs.join(", ")
}

/// The module's source file (relative to the function's directory) and its text.
pub fn module_source(
    language: Language,
    facts: &ModelFacts,
    model_file: &str,
) -> anyhow::Result<(&'static str, String)> {
    let inputs = inputs(facts, language)?;
    let outputs = output_list(facts);
    let mut text = String::new();
    let file = match language {
        Language::Rust => {
            let _ = writeln!(
                text,
                "//! The module of {model_file} (made by `aifn new --model`).\n//!\n//! Preprocessing: TODO turn the request into the model's inputs; until then they are zeros.\n//! Postprocessing: the host answers with the outputs as v2 JSON: {outputs}.\nuse aifn_sdk::{{Error, Function, Request, Response, Tensor}};\n\nstruct Module;\n\nimpl Function for Module {{\n    fn preprocess(req: Request) -> Result<Vec<Tensor>, Error> {{\n        // TODO: read `req.body` (or `req.json::<T>()?`) into the inputs. A dimension of any size\n        // (a name or `?`) is 1 here.\n        let _ = &req;\n        Ok(vec!["
            );
            for input in &inputs {
                let zero = match input.kind {
                    "f32" | "f64" => "0.0",
                    "bool" => "false",
                    "string" => "String::new()",
                    _ => "0",
                };
                let _ = writeln!(
                    text,
                    "            // {}\n            Tensor::{}({:?}, vec![{}], vec![{zero}; {}]),",
                    input.declared(),
                    input.kind,
                    input.port.name,
                    input.shape_list(),
                    input.elements()
                );
            }
            let first = facts.outputs.first().map_or("output", |p| p.name.as_str());
            let _ = writeln!(
                text,
                "        ])\n    }}\n\n    fn postprocess(_req: Request, outputs: Vec<Tensor>) -> Result<Option<Response>, Error> {{\n        // TODO: answer yourself, e.g. from `aifn_sdk::output(&outputs, {first:?})?.as_f32()`,\n        // with `Response::json(&value).map(Some)`. `None`: the host answers with every output.\n        let _ = outputs;\n        Ok(None)\n    }}\n}}\n\naifn_sdk::export!(Module);"
            );
            "module/src/lib.rs"
        }
        Language::Python => {
            let _ = writeln!(
                text,
                "\"\"\"The module of {model_file} (made by `aifn new --model`).\n\nPreprocessing: TODO turn the request into the model's inputs; until then they are zeros.\nPostprocessing: the host answers with the outputs as v2 JSON: {outputs}.\n\"\"\"\n\nimport aifn\n\n\ndef preprocess(req: aifn.Request) -> list:\n    # TODO: read req.body (or req.json()) into the inputs. A dimension of any size (a name or\n    # `?`) is 1 here.\n    return ["
            );
            for input in &inputs {
                let (function, zero) = match input.kind {
                    "f32" | "f64" => (input.kind, "0.0"),
                    "bool" => ("bool_", "False"),
                    "string" => ("string", "\"\""),
                    _ => (input.kind, "0"),
                };
                let _ = writeln!(
                    text,
                    "        # {}\n        aifn.{function}({:?}, [{}], [{zero}] * {}),",
                    input.declared(),
                    input.port.name,
                    input.shape_list(),
                    input.elements()
                );
            }
            let _ = writeln!(
                text,
                "    ]\n\n\n# To answer yourself, define postprocess(req, outputs) and return aifn.json(...), reading\n# outputs.f32(\"NAME\"); without it, the host answers with every output."
            );
            "src/app.py"
        }
        Language::C => {
            let _ = writeln!(
                text,
                "/* The module of {model_file} (made by `aifn new --model`).\n *\n * Preprocessing: TODO turn the request into the model's inputs; until then they are zeros.\n * Postprocessing: the host answers with the outputs as v2 JSON: {outputs}.\n * To answer yourself, define aifn_postprocess (see aifn.h). */\n#include \"aifn.h\"\n"
            );
            for (i, input) in inputs.iter().enumerate() {
                let c_type = match input.kind {
                    "f32" => "float",
                    "f64" => "double",
                    "i32" => "int32_t",
                    "i64" => "int64_t",
                    _ => "uint8_t",
                };
                let _ = writeln!(
                    text,
                    "/* {} */\nstatic const uint32_t input{i}_shape[{}] = {{{}}};\nstatic const {c_type} input{i}[{}] = {{0}};\n",
                    input.declared(),
                    input.shape.len().max(1),
                    input.shape_list(),
                    input.elements().max(1)
                );
            }
            let _ = writeln!(
                text,
                "bool aifn_preprocess(const aifn_request *req, aifn_tensors *out, aifn_error *err) {{\n    /* TODO: read aifn_body(req) into the inputs. A dimension of any size is 1 here. */\n    (void)req;\n    (void)err;\n    return"
            );
            let pushes: Vec<String> = inputs
                .iter()
                .enumerate()
                .map(|(i, input)| {
                    format!(
                        "aifn_push_{}(out, {:?}, input{i}_shape, {}, input{i}, {})",
                        input.kind,
                        input.port.name,
                        input.shape.len(),
                        input.elements()
                    )
                })
                .collect();
            let _ = writeln!(text, "        {};\n}}", pushes.join("\n        && "));
            "src/main.c"
        }
        Language::Zig => {
            let _ = writeln!(
                text,
                "//! The module of {model_file} (made by `aifn new --model`).\n//!\n//! Preprocessing: TODO turn the request into the model's inputs; until then they are zeros.\n//! Postprocessing: the host answers with the outputs as v2 JSON: {outputs}.\n//! To answer yourself, add `pub fn postprocess` (see the SDK's aifn.zig).\nconst aifn = @import(\"aifn\");\n\npub fn preprocess(req: aifn.Request, out: *aifn.Tensors) !void {{\n    // TODO: read req.body into the inputs. A dimension of any size is 1 here.\n    _ = req;"
            );
            for input in &inputs {
                let push = zig_push(input.kind);
                let _ = writeln!(
                    text,
                    "    // {}\n    try out.{push}({:?}, &.{{ {} }}, &@as([{}]{}, @splat(0)));",
                    input.declared(),
                    input.port.name,
                    input.shape_list(),
                    input.elements(),
                    input.kind
                );
            }
            let _ = writeln!(text, "}}");
            "src/main.zig"
        }
        Language::AssemblyScript => {
            let _ = writeln!(
                text,
                "// The module of {model_file} (made by `aifn new --model`).\n//\n// Preprocessing: TODO turn the request into the model's inputs; until then they are zeros.\n// Postprocessing: the host answers with the outputs as v2 JSON: {outputs}.\n// To answer yourself, export `postprocess` (see the SDK's README).\nimport {{ Request, Tensors, Failure }} from \"aifn\";\n\nexport function preprocess(req: Request, out: Tensors): Failure | null {{\n  // TODO: read req.body into the inputs. A dimension of any size is 1 here."
            );
            for input in &inputs {
                let push = zig_push(input.kind);
                let _ = writeln!(
                    text,
                    "  // {}\n  out.{push}({:?}, [{}], new Array<{}>({}));",
                    input.declared(),
                    input.port.name,
                    input.shape_list(),
                    input.kind,
                    input.elements()
                );
            }
            let _ = writeln!(text, "  return null;\n}}");
            "src/main.ts"
        }
    };
    Ok((file, text))
}

/// `pushF32`, ...: the Zig and AssemblyScript SDKs' method names.
fn zig_push(kind: &str) -> String {
    format!("push{}", kind.to_uppercase())
}

/// The README of a function made from a model.
pub fn readme(name: &str, language: Language, facts: &ModelFacts, model_file: &str) -> String {
    let mut text = format!(
        "# {name}\n\nA function for `{model_file}`, made by `aifn new --lang {language} --model`. Its module is a\nskeleton: it gives the model zeros of the shapes below, and the host answers with every output as\nv2 JSON. Replace the preprocessing with your own (docs/first-model.md says how to match a Python\nreference exactly).\n\n| | name | type | shape |\n|---|---|---|---|\n"
    );
    for (role, ports) in [("input", &facts.inputs), ("output", &facts.outputs)] {
        for port in ports.iter() {
            let dims: Vec<String> = port.shape.iter().map(Dim::to_string).collect();
            let _ = writeln!(
                text,
                "| {role} | `{}` | {} | [{}] |",
                port.name,
                port.onnx_type,
                dims.join(", ")
            );
        }
    }
    let _ = write!(
        text,
        "\n```sh\naifn deploy function.yaml      # builds the module, then deploys\ncurl -X POST -d '' http://127.0.0.1:8080/v1/{name}\n```\n\n`aifn inspect {model_file}` shows the model again.\n"
    );
    text
}
