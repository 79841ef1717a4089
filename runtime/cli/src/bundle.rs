//! What a deploy sends: the spec text and the files it references, resolved next to the spec file;
//! and the same written out as a directory a pod serves (`aifn bundle`, `aifn serve --bundle`).

use aifn_host::records::Digest;
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};

pub struct Artifact {
    pub path: PathBuf,
    /// As the spec names it, relative to the spec's directory (or absolute).
    pub relative: String,
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

/// Reads and validates a spec file: its text, and what it says (errors name field and line).
pub fn read_spec(spec_path: &Path) -> anyhow::Result<(String, aifn_spec::FunctionSpec)> {
    let spec_yaml = std::fs::read_to_string(spec_path)
        .with_context(|| format!("reading {}", spec_path.display()))?;
    match aifn_spec::parse(&spec_yaml) {
        Ok(spec) => Ok((spec_yaml, spec)),
        Err(errors) => bail!("{}", render_spec_errors(spec_path, &errors)),
    }
}

impl Bundle {
    /// Reads and validates a spec, then the model and module files it names.
    pub fn load(spec_path: &Path) -> anyhow::Result<Bundle> {
        let (spec_yaml, spec) = read_spec(spec_path)?;
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
        relative: relative.to_string(),
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

/// The spec's name inside a bundle directory, and the manifest beside it.
pub const BUNDLE_SPEC: &str = "function.yaml";
pub const BUNDLE_MANIFEST: &str = "bundle.json";

/// `bundle.json`: what a bundle directory holds, so that a pod serves exactly what was bundled.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub name: String,
    /// Over the spec text and every file's path and digest: the version's identity (image tags).
    pub digest: Digest,
    pub spec: BundleFile,
    pub files: Vec<BundleFile>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BundleFile {
    pub path: String,
    pub sha256: Digest,
    pub size: u64,
}

impl Bundle {
    /// Writes the spec (as written) and each file it names, at its path below `out`, then the
    /// manifest. A file outside the spec's directory is refused before anything is written: the
    /// bundle must stand on its own.
    pub fn write_to(&self, out: &Path) -> anyhow::Result<Manifest> {
        let fields = [
            ("spec.model.path", &self.model),
            ("spec.module.path", &self.module),
            ("spec.fallback.model.path", &self.fallback_model),
            ("spec.monitoring.reference", &self.monitoring_reference),
        ];
        let mut files = Vec::new();
        for (field, artifact) in fields {
            let Some(artifact) = artifact else { continue };
            let relative = Path::new(&artifact.relative);
            let inside = relative.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            });
            if !inside {
                bail!(
                    "{field}: {} is not below the spec's directory; a bundle holds only files the \
                     spec names by a relative path below it",
                    artifact.relative
                );
            }
            files.push((artifact.relative.clone(), artifact));
        }
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let mut listed = Vec::new();
        for (relative, artifact) in &files {
            let target = out.join(relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&target, &artifact.bytes)
                .with_context(|| format!("writing {}", target.display()))?;
            listed.push(BundleFile {
                path: relative.clone(),
                sha256: artifact.digest.clone(),
                size: artifact.bytes.len() as u64,
            });
        }
        let spec_path = out.join(BUNDLE_SPEC);
        std::fs::write(&spec_path, &self.spec_yaml)
            .with_context(|| format!("writing {}", spec_path.display()))?;
        let spec = BundleFile {
            path: BUNDLE_SPEC.to_string(),
            sha256: Digest::of(self.spec_yaml.as_bytes()),
            size: self.spec_yaml.len() as u64,
        };
        let manifest = Manifest {
            name: self.spec.metadata.name.clone(),
            digest: bundle_digest(&spec, &listed),
            spec,
            files: listed,
        };
        let manifest_path = out.join(BUNDLE_MANIFEST);
        std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)
            .with_context(|| format!("writing {}", manifest_path.display()))?;
        Ok(manifest)
    }
}

fn bundle_digest(spec: &BundleFile, files: &[BundleFile]) -> Digest {
    let mut text = format!("{} {}\n", spec.path, spec.sha256);
    for file in files {
        text.push_str(&format!("{} {}\n", file.path, file.sha256));
    }
    Digest::of(text.as_bytes())
}

/// Checks every file of the bundle in `dir` against its manifest, and loads it. Nothing else is
/// read: a pod serves what was bundled or refuses to start, naming the file that differs.
pub fn load_bundle_dir(dir: &Path) -> anyhow::Result<(Manifest, Bundle)> {
    let manifest_path = dir.join(BUNDLE_MANIFEST);
    let text = std::fs::read(&manifest_path).with_context(|| {
        format!(
            "reading {} (make a bundle with `aifn bundle function.yaml --out DIR`)",
            manifest_path.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a bundle manifest", manifest_path.display()))?;
    for file in std::iter::once(&manifest.spec).chain(&manifest.files) {
        let path = dir.join(&file.path);
        let bytes =
            std::fs::read(&path).with_context(|| format!("bundle file {}", path.display()))?;
        let digest = Digest::of(&bytes);
        if digest != file.sha256 {
            bail!(
                "bundle file {} is not the one bundled: its sha256 is {digest}, the manifest says {}",
                path.display(),
                file.sha256
            );
        }
    }
    if bundle_digest(&manifest.spec, &manifest.files) != manifest.digest {
        bail!(
            "{}: its digest does not match its files",
            manifest_path.display()
        );
    }
    let bundle = Bundle::load(&dir.join(&manifest.spec.path))?;
    let named: Vec<&str> = bundle.artifacts().map(|a| a.relative.as_str()).collect();
    let listed: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    if named != listed {
        bail!(
            "{}: the spec names {named:?}, the manifest lists {listed:?}",
            manifest_path.display()
        );
    }
    Ok((manifest, bundle))
}
