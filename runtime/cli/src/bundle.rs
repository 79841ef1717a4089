//! What a deploy sends: the spec text and the files it references, resolved next to the spec file.

use aifn_host::records::Digest;
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};

pub struct Artifact {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

pub struct Bundle {
    pub spec_yaml: String,
    pub spec: aifn_spec::FunctionSpec,
    pub model: Option<Artifact>,
    pub module: Option<Artifact>,
    pub fallback_model: Option<Artifact>,
    pub monitoring_reference: Option<Artifact>,
}

impl Bundle {
    /// Reads and validates a spec, then the model and module files it names.
    pub fn load(spec_path: &Path) -> anyhow::Result<Bundle> {
        let spec_yaml = std::fs::read_to_string(spec_path)
            .with_context(|| format!("reading {}", spec_path.display()))?;
        let spec = match aifn_spec::parse(&spec_yaml) {
            Ok(spec) => spec,
            Err(errors) => bail!("{}", render_spec_errors(spec_path, &errors)),
        };
        let dir = spec_path.parent().unwrap_or(Path::new("."));
        let model = spec
            .spec
            .model
            .path
            .as_deref()
            .map(|p| read_artifact(dir, p, "spec.model.path"))
            .transpose()?;
        let module = spec
            .spec
            .module
            .as_ref()
            .map(|m| read_artifact(dir, &m.path, "spec.module.path"))
            .transpose()?;
        let fallback_model = spec
            .spec
            .fallback
            .as_ref()
            .and_then(|f| f.model.path.as_deref())
            .map(|p| read_artifact(dir, p, "spec.fallback.model.path"))
            .transpose()?;
        let monitoring_reference = spec
            .spec
            .monitoring
            .as_ref()
            .and_then(|m| m.reference.as_deref())
            .map(|p| read_artifact(dir, p, "spec.monitoring.reference"))
            .transpose()?;
        Ok(Bundle {
            spec_yaml,
            spec,
            model,
            module,
            fallback_model,
            monitoring_reference,
        })
    }

    pub fn artifacts(&self) -> impl Iterator<Item = &Artifact> {
        self.model
            .iter()
            .chain(self.module.iter())
            .chain(self.fallback_model.iter())
            .chain(self.monitoring_reference.iter())
    }
}

fn read_artifact(dir: &Path, relative: &str, field: &str) -> anyhow::Result<Artifact> {
    let path = dir.join(relative);
    let bytes = std::fs::read(&path).with_context(|| {
        let hint = if field == "spec.module.path" {
            " (build the module first: see the function's README)"
        } else {
            ""
        };
        format!("{field}: cannot read {}{hint}", path.display())
    })?;
    let digest = Digest::of(&bytes);
    Ok(Artifact {
        path,
        bytes,
        digest,
    })
}

/// `file:line:col: field: message`, one per line, as compilers print them.
pub fn render_spec_errors(path: &Path, errors: &aifn_spec::SpecErrors) -> String {
    let lines: Vec<String> = errors
        .0
        .iter()
        .map(|e| format!("{}:{e}", path.display()))
        .collect();
    let count = errors.0.len();
    format!(
        "{}\n{count} error{} in {}",
        lines.join("\n"),
        if count == 1 { "" } else { "s" },
        path.display()
    )
}
