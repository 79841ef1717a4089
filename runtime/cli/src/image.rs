//! `aifn image`: an OCI image per function version, built with buildah from this machine's own
//! files (no base image, nothing fetched): the aifn binary, ONNX Runtime, the shared libraries
//! both load (as `ldd` lists them), a passwd entry for the non-root user pods run as, and the
//! function's bundle at `/bundle`. Tagged by the bundle's digest, so a tag names one version.

use crate::bundle::Bundle;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Inside the image.
const BINARY: &str = "usr/bin/aifn";
const ORT_DIR: &str = "usr/lib/aifn";
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// Where buildah keeps images: its default store, or a directory of one's own (tests, CI).
#[derive(Debug, Clone, Default)]
pub struct Storage(pub Option<PathBuf>);

impl Storage {
    /// `buildah` with the vfs driver (works without overlay or fuse) on this store.
    pub fn buildah(&self) -> Command {
        let mut command = Command::new("buildah");
        if let Some(dir) = &self.0 {
            command
                .arg("--root")
                .arg(dir.join("root"))
                .arg("--runroot")
                .arg(dir.join("run"));
        }
        command.args(["--storage-driver", "vfs"]);
        command
    }
}

/// What was built.
#[derive(Debug)]
pub struct Built {
    pub reference: String,
    pub digest: aifn_host::records::Digest,
    /// The root filesystem's size, in bytes.
    pub size: u64,
}

/// Builds the image of the function in `spec` as `repository:sha256-DIGEST`.
pub fn build_image(
    spec: &Path,
    repository: Option<&str>,
    storage: &Storage,
) -> anyhow::Result<Built> {
    which("buildah").context(
        "aifn image needs buildah: `sudo apt-get install buildah` (./scripts/setup.sh installs it)",
    )?;
    let bundle = Bundle::load(spec)?;
    let staging = tempdir("aifn-image")?;
    let root = staging.join("rootfs");
    let manifest = bundle.write_to(&root.join("bundle"))?;
    populate_root(&root)?;
    let size = tree_size(&root);
    let name = manifest.name.clone();
    let repository = repository.map_or_else(|| format!("localhost/aifn/{name}"), str::to_string);
    let tag = manifest.digest.to_string().replacen(':', "-", 1);
    let reference = format!("{repository}:{tag}");
    let result = commit(&root, &reference, &name, storage);
    let _ = std::fs::remove_dir_all(&staging);
    result?;
    Ok(Built {
        reference,
        digest: manifest.digest,
        size,
    })
}

/// Lays out the root filesystem: binary, ONNX Runtime, libraries, users, writable directories.
fn populate_root(root: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the aifn binary")?;
    let binary = root.join(BINARY);
    copy_file(&exe, &binary)?;
    // Line tables are for debugging here, not in pods.
    let _ = Command::new("strip")
        .arg("--strip-debug")
        .arg(&binary)
        .status();
    let ort = aifn_model::locate_onnxruntime()?;
    let ort_dir = ort.parent().context("ONNX Runtime's directory")?;
    let mut loaded = vec![binary.clone()];
    for entry in std::fs::read_dir(ort_dir)? {
        let path = entry?.path();
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        if file.starts_with("libonnxruntime") && file.contains(".so") {
            let target = root.join(ORT_DIR).join(&*file);
            copy_file(&path, &target)?;
            loaded.push(target);
        }
    }
    for library in shared_libraries(&loaded)? {
        let relative = library.strip_prefix("/").unwrap_or(&library);
        copy_file(&library, &root.join(relative))?;
    }
    if Path::new("/").join(CA_BUNDLE).exists() {
        copy_file(&Path::new("/").join(CA_BUNDLE), &root.join(CA_BUNDLE))?;
    }
    let user = aifn_k8s::render::POD_USER;
    write(
        &root.join("etc/passwd"),
        &format!("root:x:0:0:root:/:/sbin/nologin\naifn:x:{user}:{user}:aifn:/var/lib/aifn:/sbin/nologin\n"),
    )?;
    write(
        &root.join("etc/group"),
        &format!("root:x:0:\naifn:x:{user}:\n"),
    )?;
    for dir in ["tmp", "var/lib/aifn", "proc", "dev"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::set_permissions(
        root.join("var/lib/aifn"),
        std::fs::Permissions::from_mode(0o777),
    )?;
    Ok(())
}

/// Every shared library the files load, and the dynamic loader, as `ldd` resolves them here.
fn shared_libraries(files: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut libraries = std::collections::BTreeSet::new();
    for file in files {
        let output = Command::new("ldd")
            .arg(file)
            .output()
            .context("running ldd")?;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            // `libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x...)`, or the loader's own line.
            let path = match line.split_once("=>") {
                Some((_, resolved)) => resolved.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/')) {
                libraries.insert(PathBuf::from(path));
            }
        }
    }
    Ok(libraries.into_iter().collect())
}

/// `buildah from scratch`, copy the tree in, say how it runs, commit.
fn commit(root: &Path, reference: &str, name: &str, storage: &Storage) -> anyhow::Result<()> {
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let output = storage
            .buildah()
            .args(args)
            .output()
            .context("running buildah")?;
        if !output.status.success() {
            bail!(
                "buildah {}: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let container = run(&[
        "from",
        "--name",
        &format!("aifn-image-{}", std::process::id()),
        "scratch",
    ])?;
    let result = (|| {
        run(&["copy", &container, &root.to_string_lossy(), "/"])?;
        let user = aifn_k8s::render::POD_USER.to_string();
        let ort = format!("ORT_DYLIB_PATH=/{ORT_DIR}/{}", ort_library_name(root)?);
        run(&[
            "config",
            "--entrypoint",
            &format!("[\"/{BINARY}\"]"),
            "--cmd",
            r#"["serve", "--bundle", "/bundle", "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:8081", "--state-dir", "/var/lib/aifn/state"]"#,
            "--user",
            &format!("{user}:{user}"),
            "--env",
            &ort,
            "--env",
            "AIFN_LOG_FORMAT=json",
            "--port",
            "8080",
            "--port",
            "8081",
            "--workingdir",
            "/",
            "--label",
            &format!("ai.function/name={name}"),
            &container,
        ])?;
        run(&["commit", "--quiet", &container, reference])
    })();
    let _ = run(&["rm", &container]);
    result.map(|_| ())
}

/// The versioned `libonnxruntime.so.X.Y.Z` in the image.
fn ort_library_name(root: &Path) -> anyhow::Result<String> {
    std::fs::read_dir(root.join(ORT_DIR))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libonnxruntime.so."))
        .context("no libonnxruntime.so.X.Y.Z was copied")
}

fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // `fs::copy` follows links: the image gets the file, not a link to a path it lacks.
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

fn tempdir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn which(program: &str) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        bail!("`{program}` is not on PATH")
    }
}
