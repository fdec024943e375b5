//! Finds the workspace's members through `cargo metadata --no-deps`, without compiling anything.
//!
//! Cargo is the authority on which packages are members (globs, excludes, nested fixture
//! workspaces); the checks then read each member's own files.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// Why the workspace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// `cargo` could not be started at all.
    #[error("could not run `cargo metadata`: {0}")]
    Spawn(#[source] std::io::Error),
    /// `cargo metadata` ran and refused the workspace.
    #[error("`cargo metadata` failed for {manifest}: {stderr}")]
    Metadata {
        /// The root manifest that was asked about.
        manifest: String,
        /// What cargo said.
        stderr: String,
    },
    /// `cargo metadata` printed something that is not its documented JSON.
    #[error("could not read `cargo metadata` output: {0}")]
    Json(#[from] serde_json::Error),
    /// A file could not be read.
    #[error("could not read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// One workspace member as cargo sees it.
#[derive(Debug, Clone)]
pub struct Member {
    /// The package name.
    pub name: String,
    /// The name its library is imported by (`use <lib_name>::…`), when it has a library.
    pub lib_name: Option<String>,
    /// Absolute path of its `Cargo.toml`.
    pub manifest_path: PathBuf,
    /// Absolute path of the folder holding its `Cargo.toml`.
    pub dir: PathBuf,
}

/// The workspace: its root folder and its members, sorted by folder.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The folder holding the root `Cargo.toml`.
    pub root: PathBuf,
    /// The members, sorted by `dir`.
    pub members: Vec<Member>,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
    workspace_root: PathBuf,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    manifest_path: PathBuf,
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

impl Workspace {
    /// Loads the workspace whose root manifest is `manifest_path`.
    ///
    /// # Errors
    /// When cargo cannot be run or rejects the manifest.
    pub fn load(manifest_path: &Path) -> Result<Self, WorkspaceError> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--offline",
                "--manifest-path",
            ])
            .arg(manifest_path)
            .output()
            .map_err(WorkspaceError::Spawn)?;
        if !output.status.success() {
            return Err(WorkspaceError::Metadata {
                manifest: manifest_path.display().to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        let metadata: Metadata = serde_json::from_slice(&output.stdout)?;
        let mut members: Vec<Member> = metadata
            .packages
            .into_iter()
            .filter(|p| metadata.workspace_members.contains(&p.id))
            .map(|p| {
                let lib_name = p
                    .targets
                    .iter()
                    .find(|t| {
                        t.kind
                            .iter()
                            .any(|k| k.contains("lib") || k == "proc-macro")
                    })
                    .map(|t| t.name.replace('-', "_"));
                let dir = p
                    .manifest_path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                Member {
                    name: p.name,
                    lib_name,
                    manifest_path: p.manifest_path,
                    dir,
                }
            })
            .collect();
        members.sort_by(|a, b| a.dir.cmp(&b.dir));
        Ok(Self {
            root: metadata.workspace_root,
            members,
        })
    }

    /// Loads the workspace xtask runs in (see [`own_root`]).
    ///
    /// # Errors
    /// As [`Workspace::load`].
    pub fn load_own() -> Result<Self, WorkspaceError> {
        Self::load(&own_root().join("Cargo.toml"))
    }

    /// The member whose folder most specifically contains `path`, if any.
    #[must_use]
    pub fn member_containing(&self, path: &Path) -> Option<&Member> {
        self.members
            .iter()
            .filter(|m| path.starts_with(&m.dir))
            .max_by_key(|m| m.dir.components().count())
    }

    /// `path` relative to the workspace root, with `/` separators, for messages.
    #[must_use]
    pub fn relative(&self, path: &Path) -> String {
        relative_to(&self.root, path)
    }

    /// Reads a file, naming it in the error.
    ///
    /// # Errors
    /// When the file cannot be read as UTF-8 text.
    pub fn read(path: &Path) -> Result<String, WorkspaceError> {
        std::fs::read_to_string(path).map_err(|source| WorkspaceError::Read {
            path: path.display().to_string(),
            source,
        })
    }
}

/// The root of the workspace to work on: the one cargo finds from the current directory
/// (`cargo locate-project --workspace`), so that two checkouts sharing one
/// `CARGO_TARGET_DIR` — or a checkout moved after its last build — each check themselves.
/// Only when cargo finds none there is it the folder this xtask was compiled in.
#[must_use]
pub fn own_root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        std::env::current_dir()
            .ok()
            .and_then(|dir| root_from(&dir))
            .unwrap_or_else(compiled_root)
    })
    .clone()
}

/// The root of the workspace `dir` belongs to, as cargo sees it; `None` outside any.
#[must_use]
pub fn root_from(dir: &Path) -> Option<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .current_dir(dir)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let manifest = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    manifest.parent().map(Path::to_path_buf)
}

/// The workspace this xtask was compiled in (the parent of `xtask/`).
fn compiled_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir
        .parent()
        .map_or_else(|| xtask_dir.to_path_buf(), Path::to_path_buf)
}

/// `path` relative to `root` with `/` separators; unchanged when it is not under `root`.
#[must_use]
pub fn relative_to(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
