//! `aifn build` and `aifn new`: compile a function's module from source with its language's SDK
//! (`sdk/`), and write a new function from the templates in `sdk/templates`.

use aifn_spec::{Language, ModuleBuild};
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

/// What `build` did.
pub enum Outcome {
    /// The spec has no `module.build`: there is nothing to build.
    NothingToBuild,
    UpToDate(PathBuf),
    Compiled,
}

/// Builds the module of the spec at `spec_path` when it is missing or older than its sources (or
/// always, with `force`).
pub fn build(spec_path: &Path, force: bool) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("reading {}", spec_path.display()))?;
    let spec = aifn_spec::parse(&text)
        .map_err(|errors| anyhow::anyhow!(crate::bundle::render_spec_errors(spec_path, &errors)))?;
    let Some(module) = &spec.spec.module else {
        return Ok(Outcome::NothingToBuild);
    };
    let Some(how) = &module.build else {
        return Ok(Outcome::NothingToBuild);
    };
    let dir = parent_dir(spec_path);
    let wasm = dir.join(&module.path);
    let source = dir.join(&how.source);
    if !source.exists() {
        bail!(
            "{}: spec.module.build.source: {} does not exist",
            spec_path.display(),
            source.display()
        );
    }
    if !force && !out_of_date(&wasm, &source, spec_path)? {
        return Ok(Outcome::UpToDate(wasm));
    }
    eprintln!(
        "building the module ({}): {} → {}",
        how.language,
        source.display(),
        wasm.display()
    );
    let started = Instant::now();
    run_toolchain(how, &source, &wasm)?;
    if !wasm.exists() {
        bail!(
            "the {} build succeeded but {} does not exist: spec.module.path must name what it builds",
            how.language,
            wasm.display()
        );
    }
    eprintln!(
        "built {} in {:.1}s",
        wasm.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(Outcome::Compiled)
}

/// The module needs building when it is missing or older than the spec or any file of its source:
/// the source file's directory (for Rust, the crate), without build outputs.
fn out_of_date(wasm: &Path, source: &Path, spec_path: &Path) -> anyhow::Result<bool> {
    let Ok(built) = std::fs::metadata(wasm).and_then(|m| m.modified()) else {
        return Ok(true);
    };
    let root = if source.is_dir() {
        source.to_path_buf()
    } else {
        parent_dir(source)
    };
    let newest = newest_file(&root, wasm)?.max(std::fs::metadata(spec_path)?.modified()?);
    Ok(newest > built)
}

/// The directory a file is in; `.` for a bare file name (whose `parent()` is the empty path).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Directories of build outputs and caches, never sources.
const NOT_SOURCES: &[&str] = &[
    "target",
    "build",
    "node_modules",
    "__pycache__",
    ".zig-cache",
    "zig-out",
    ".git",
];

fn newest_file(dir: &Path, except: &Path) -> anyhow::Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if !NOT_SOURCES.contains(&entry.file_name().to_string_lossy().as_ref()) {
                newest = newest.max(newest_file(&path, except)?);
            }
        } else if path != except {
            newest = newest.max(entry.metadata()?.modified()?);
        }
    }
    Ok(newest)
}

fn run_toolchain(how: &ModuleBuild, source: &Path, wasm: &Path) -> anyhow::Result<()> {
    if let Some(parent) = wasm.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut command = match how.language {
        Language::Rust => {
            if Command::new("cargo").arg("--version").output().is_err() {
                bail!("cannot build a Rust module; missing:\n  - cargo (install rustup: https://rustup.rs)");
            }
            let targets = Command::new("rustup")
                .args(["target", "list", "--installed"])
                .output();
            if let Ok(out) = targets {
                if !String::from_utf8_lossy(&out.stdout).contains("wasm32-wasip2") {
                    bail!("cannot build a Rust module; missing:\n  - the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
                }
            }
            let mut cargo = Command::new("cargo");
            cargo
                .args([
                    "build",
                    "--release",
                    "--target",
                    "wasm32-wasip2",
                    "--manifest-path",
                ])
                .arg(source.join("Cargo.toml"));
            cargo
        }
        other => {
            let script = sdk_dir()?.join(other.name()).join("build.sh");
            let mut sh = Command::new(script);
            sh.arg(absolute(wasm)?).arg(absolute(source)?);
            sh
        }
    };
    let status = command
        .status()
        .with_context(|| format!("running the {} toolchain", how.language))?;
    if !status.success() {
        bail!("building the {} module failed ({status})", how.language);
    }
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(std::env::current_dir()?.join(path))
}

/// The SDKs: `$AIFN_SDK`, or `share/aifn/sdk` beside an installed binary (`scripts/install.sh`),
/// or `sdk/` of the checkout the `aifn` binary was built in (`target/release/aifn`).
pub fn sdk_dir() -> anyhow::Result<PathBuf> {
    let is_sdk = |dir: &Path| dir.join("templates/function.yaml").is_file();
    if let Some(dir) = std::env::var_os("AIFN_SDK") {
        let dir = PathBuf::from(dir);
        if is_sdk(&dir) {
            return Ok(dir);
        }
        bail!("AIFN_SDK={} is not the aifn sdk/ directory", dir.display());
    }
    let exe = std::env::current_exe()?.canonicalize()?;
    let bin = exe.parent().unwrap_or(Path::new("/"));
    for candidate in ["../share/aifn/sdk", "../../sdk"] {
        let dir = bin.join(candidate);
        if is_sdk(&dir) {
            return Ok(dir.canonicalize()?);
        }
    }
    bail!(
        "cannot find the aifn SDKs next to {}: install aifn with ./scripts/install.sh from its checkout (it puts them in PREFIX/share/aifn/sdk), or set AIFN_SDK to a checkout's sdk/ directory",
        exe.display()
    )
}

/// A real model to start a function from (`aifn new --model`).
pub struct StartingModel<'a> {
    pub path: &'a Path,
    pub facts: aifn_model::ModelFacts,
}

/// Writes a new function `name` in `dir`: spec, README, a model and a module source in
/// `language` that builds and deploys as written. The model is the template's small one, or
/// `model`, with a module skeleton made for its inputs.
pub fn new_function(
    language: Language,
    name: &str,
    dir: &Path,
    model: Option<&StartingModel>,
) -> anyhow::Result<PathBuf> {
    if let Err(message) = aifn_spec::validate::check_name(name) {
        bail!("{message}");
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} already exists and is not empty", dir.display());
    }
    let sdk = sdk_dir()?;
    let templates = sdk.join("templates");
    let (source, wasm, memory, files): (&str, String, &str, &[&str]) = match language {
        Language::Rust => (
            "module",
            format!(
                "module/target/wasm32-wasip2/release/{}.wasm",
                name.replace('-', "_")
            ),
            "64Mi",
            &["module/Cargo.toml", "module/src/lib.rs"],
        ),
        Language::C => (
            "src/main.c",
            "build/module.wasm".into(),
            "64Mi",
            &["src/main.c"],
        ),
        // The interpreter's heap and modules live in the instance's memory.
        Language::Python => (
            "src/app.py",
            "build/module.wasm".into(),
            "256Mi",
            &["src/app.py"],
        ),
        Language::Zig => (
            "src/main.zig",
            "build/module.wasm".into(),
            "64Mi",
            &["src/main.zig"],
        ),
        Language::AssemblyScript => (
            "src/main.ts",
            "build/module.wasm".into(),
            "64Mi",
            &["src/main.ts"],
        ),
    };
    let model_file = match model {
        Some(model) => model
            .path
            .file_name()
            .and_then(|f| f.to_str())
            .filter(|f| f.ends_with(".onnx"))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: a model file's name ends in .onnx",
                    model.path.display()
                )
            })?
            .to_string(),
        None => "model.onnx".to_string(),
    };
    let runtime = model
        .and_then(|m| crate::inspect::origin(&m.facts))
        .map_or("onnx", |f| f.name());
    let fill = |text: String| {
        text.replace("{{name}}", name)
            .replace("{{runtime}}", runtime)
            .replace("{{model_path}}", &model_file)
            .replace("{{crate}}", name)
            .replace("{{language}}", language.name())
            .replace("{{source}}", source)
            .replace("{{wasm}}", &wasm)
            .replace("{{memory}}", memory)
            .replace(
                "{{isolation}}",
                if language == Language::Python {
                    "instance"
                } else {
                    "request"
                },
            )
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    let mut written = Vec::new();
    let template = |file: &str| {
        std::fs::read_to_string(templates.join(file))
            .map(fill)
            .with_context(|| format!("reading the template {file}"))
    };
    written.push((PathBuf::from("function.yaml"), template("function.yaml")?));
    match model {
        None => {
            for file in ["README.md"].iter().chain(files) {
                written.push((PathBuf::from(file), template(file)?));
            }
        }
        Some(model) => {
            let (source, text) =
                crate::scaffold::module_source(language, &model.facts, &model_file)?;
            written.push((PathBuf::from(source), text));
            let readme = crate::scaffold::readme(name, language, &model.facts, &model_file);
            written.push((PathBuf::from("README.md"), readme));
            // The Rust crate's manifest is the template's.
            for file in files.iter().filter(|f| f.ends_with("Cargo.toml")) {
                written.push((PathBuf::from(file), template(file)?));
            }
        }
    }
    let mut written: Vec<(PathBuf, Vec<u8>)> = written
        .into_iter()
        .map(|(file, text)| (file, text.into_bytes()))
        .collect();
    let model_source = model.map_or(templates.join("model.onnx"), |m| m.path.to_path_buf());
    written.push((
        PathBuf::from(&model_file),
        std::fs::read(&model_source)
            .with_context(|| format!("reading {}", model_source.display()))?,
    ));
    for (file, bytes) in written {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir.join("function.yaml"))
}

#[cfg(test)]
mod tests {
    use super::parent_dir;
    use std::path::{Path, PathBuf};

    #[test]
    fn a_bare_file_name_is_in_the_working_directory() {
        assert_eq!(parent_dir(Path::new("function.yaml")), PathBuf::from("."));
        assert_eq!(parent_dir(Path::new("src/app.py")), PathBuf::from("src"));
        assert_eq!(
            parent_dir(Path::new("/f/function.yaml")),
            PathBuf::from("/f")
        );
    }
}
