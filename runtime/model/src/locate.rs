//! Finding `libonnxruntime.so` with no configuration.
//!
//! Order: `ORT_DYLIB_PATH`; the `onnxruntime` Python package in an active virtualenv or a `.venv` in
//! the working directory, next to the executable or in one of their parents (where the project's
//! setup installs it); then whatever `python3` can import.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot find ONNX Runtime (libonnxruntime.so).\n  looked in: {looked}\n  fix: run ./scripts/setup.sh (installs the onnxruntime Python package into .venv), \
     or `pip install onnxruntime==1.31.1`, or set ORT_DYLIB_PATH to the library \
     (…/site-packages/onnxruntime/capi/libonnxruntime.so.*)"
)]
pub struct LocateError {
    looked: String,
}

pub fn locate_onnxruntime() -> Result<PathBuf, LocateError> {
    let mut looked = Vec::new();
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        looked.push(format!("ORT_DYLIB_PATH={} (no such file)", path.display()));
    }
    let mut venvs: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        venvs.push(PathBuf::from(venv));
    }
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    for start in starts.iter().flatten() {
        for dir in start.ancestors() {
            venvs.push(dir.join(".venv"));
        }
    }
    for venv in &venvs {
        if let Some(lib) = find_in_venv(venv) {
            return Ok(lib);
        }
    }
    looked.push("virtualenvs ($VIRTUAL_ENV, .venv in the working directory, next to aifn, and their parents)".into());
    if let Some(lib) = ask_python() {
        return Ok(lib);
    }
    looked.push("the onnxruntime package of `python3`".into());
    Err(LocateError {
        looked: looked.join("; "),
    })
}

fn find_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let entries = std::fs::read_dir(&lib).ok()?;
    entries
        .flatten()
        .map(|python| python.path().join("site-packages/onnxruntime/capi"))
        .find_map(|capi| library_in(&capi))
}

fn ask_python() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let package = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    library_in(&package.join("capi"))
}

/// The versioned `libonnxruntime.so.X.Y.Z` (the wheel also ships providers' libraries).
fn library_in(capi: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(capi)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort();
    found.pop()
}
