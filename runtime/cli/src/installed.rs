//! What `scripts/install.sh` recorded beside an installed `aifn` (`PREFIX/bin/aifn` reads
//! `PREFIX/share/aifn/install.json`): where its ONNX Runtime is. The SDKs are found by
//! `build::sdk_dir`, next to it. A binary run from a checkout has no record, and finds both there.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
pub struct Installation {
    /// `libonnxruntime.so` in the install's own virtualenv.
    pub onnxruntime: PathBuf,
}

/// The record of the install this binary belongs to, if it is installed.
pub fn installation() -> Option<Installation> {
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    let record = exe.parent()?.join("../share/aifn/install.json");
    let text = std::fs::read_to_string(record).ok()?;
    serde_json::from_str(&text).ok()
}

/// The ONNX Runtime library to load when none is named (`--onnxruntime`): the install's, if it is
/// still there; else `None`, and the usual search (`aifn_model::locate_onnxruntime`) runs.
pub fn onnxruntime() -> Option<PathBuf> {
    installation()
        .map(|i| i.onnxruntime)
        .filter(|path| path.is_file())
}
