//! Contexts: the hosts this CLI talks to, by name, in one owner-only file (like kubectl's
//! kubeconfig). `aifn serve` records the host it starts and makes it current; `aifn context`
//! adds, lists, switches and removes them; every command that talks to a host uses the current
//! context unless it is told otherwise (`--context`, or `--host`/`--token`/`--state-dir`).
//!
//! The file is `$AIFN_CONFIG`, else `$XDG_CONFIG_HOME/aifn/config.yaml`, else
//! `~/.config/aifn/config.yaml`. It holds admin tokens, so it is written with mode 0600 in a 0700
//! directory, and no command prints a token from it.

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostContext {
    pub name: String,
    /// The control plane (`/admin/v1`), where commands go.
    pub admin: String,
    /// The data plane, where clients call the functions (shown by `aifn deploy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The control plane's admin token.
    pub token: String,
    /// PEM CA certificate(s) to trust for an https:// host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contexts {
    /// The context commands use when told no other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: Vec<HostContext>,
}

/// Where the contexts are kept.
pub fn config_path() -> PathBuf {
    if let Some(path) = std::env::var_os("AIFN_CONFIG") {
        return PathBuf::from(path);
    }
    let dir = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".config"),
            None => PathBuf::from(".config"),
        },
    };
    dir.join("aifn/config.yaml")
}

impl Contexts {
    /// The contexts in `path`; none when the file does not exist.
    pub fn load(path: &Path) -> anyhow::Result<Contexts> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Contexts::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        warn_if_others_can_read(path);
        serde_yaml::from_str(&text)
            .with_context(|| format!("{}: not an aifn config", path.display()))
    }

    pub fn get(&self, name: &str) -> Option<&HostContext> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// The context named, or else the current one; `None` when neither is set.
    pub fn selected(&self, name: Option<&str>) -> anyhow::Result<Option<&HostContext>> {
        let Some(name) = name.or(self.current.as_deref()) else {
            return Ok(None);
        };
        match self.get(name) {
            Some(context) => Ok(Some(context)),
            None => bail!(
                "no context `{name}` in {}; known: {} (`aifn context ls`)",
                config_path().display(),
                self.names()
            ),
        }
    }

    /// The context whose control plane is `admin`, to find a token for `--host`.
    pub fn for_admin(&self, admin: &str) -> Option<&HostContext> {
        self.contexts
            .iter()
            .find(|c| c.admin.trim_end_matches('/') == admin)
    }

    fn names(&self) -> String {
        if self.contexts.is_empty() {
            return "none".into();
        }
        let names: Vec<&str> = self.contexts.iter().map(|c| c.name.as_str()).collect();
        names.join(", ")
    }

    /// Adds `context`, or replaces the one of its name.
    pub fn put(&mut self, context: HostContext) {
        match self.contexts.iter_mut().find(|c| c.name == context.name) {
            Some(existing) => *existing = context,
            None => self.contexts.push(context),
        }
    }

    pub fn remove(&mut self, name: &str) -> anyhow::Result<()> {
        let before = self.contexts.len();
        self.contexts.retain(|c| c.name != name);
        if self.contexts.len() == before {
            bail!("no context `{name}`; known: {}", self.names());
        }
        if self.current.as_deref() == Some(name) {
            self.current = None;
        }
        Ok(())
    }

    pub fn use_context(&mut self, name: &str) -> anyhow::Result<()> {
        if self.get(name).is_none() {
            bail!("no context `{name}`; known: {}", self.names());
        }
        self.current = Some(name.to_string());
        Ok(())
    }
}

/// Reads the file, lets `change` edit it, and writes it back, holding a lock so that two hosts
/// started at once both keep their context.
pub fn update<T>(change: impl FnOnce(&mut Contexts) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let path = config_path();
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("yaml.lock"))
        .with_context(|| format!("locking {}", path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    let mut contexts = Contexts::load(&path)?;
    let value = change(&mut contexts)?;
    write_private(&path, &contexts)?;
    Ok(value)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Writes the file whole (a temporary file renamed over it), owner-only from its first byte.
fn write_private(path: &Path, contexts: &Contexts) -> anyhow::Result<()> {
    let text = format!(
        "# aifn contexts: the hosts the CLI talks to (`aifn context ls`). Owner-only: it holds admin tokens.\n{}",
        serde_yaml::to_string(contexts)?
    );
    aifn_host::store::write_owner_only(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn warn_if_others_can_read(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                eprintln!(
                    "warning: {} holds admin tokens and others can read it; run `chmod 600 {}`",
                    path.display(),
                    path.display()
                );
            }
        }
    }
}

/// `aifn context ls`: names and addresses, never tokens.
pub fn table(contexts: &Contexts) -> String {
    use std::fmt::Write as _;
    if contexts.contexts.is_empty() {
        return format!(
            "no contexts in {} (`aifn serve` records one; `aifn context add` adds one)\n",
            config_path().display()
        );
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<1} {:<20} {:<32} {:<32} TOKEN",
        "", "NAME", "CONTROL PLANE", "DATA PLANE"
    );
    for c in &contexts.contexts {
        let current = if contexts.current.as_deref() == Some(c.name.as_str()) {
            "*"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{current:<1} {:<20} {:<32} {:<32} {}",
            c.name,
            c.admin,
            c.url.as_deref().unwrap_or("-"),
            if c.token.is_empty() { "none" } else { "set" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, admin: &str) -> HostContext {
        HostContext {
            name: name.into(),
            admin: admin.into(),
            url: None,
            token: "secret-token".into(),
            ca_file: None,
        }
    }

    #[test]
    fn contexts_are_added_switched_and_removed_by_name() {
        let mut contexts = Contexts::default();
        assert!(contexts.selected(None).unwrap().is_none());
        contexts.put(host("a", "http://127.0.0.1:1"));
        contexts.put(host("b", "http://127.0.0.1:2"));
        contexts.use_context("b").unwrap();
        assert_eq!(contexts.selected(None).unwrap().unwrap().name, "b");
        assert_eq!(contexts.selected(Some("a")).unwrap().unwrap().name, "a");
        let missing = contexts.selected(Some("c")).unwrap_err().to_string();
        assert!(
            missing.contains("no context `c`") && missing.contains("a, b"),
            "{missing}"
        );
        // A context of the same name is replaced, not repeated.
        contexts.put(host("a", "http://127.0.0.1:3"));
        assert_eq!(contexts.contexts.len(), 2);
        assert_eq!(contexts.for_admin("http://127.0.0.1:3").unwrap().name, "a");
        contexts.remove("b").unwrap();
        assert_eq!(contexts.current, None);
        assert!(contexts.use_context("b").is_err());
        assert!(!table(&contexts).contains("secret-token"));
    }
}
