//! Building the lab's Go programs (the control plane, helm) from the Go module
//! proxy, once per version and source, into a cache outside the work tree.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;

use crate::run;

/// `go` with the machine's own toolchain (never a downloaded one) and the
/// committed go.mod/go.sum taken as they are.
pub fn go() -> Command {
    let mut cmd = Command::new("go");
    cmd.env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly -buildvcs=false");
    cmd
}

/// Where built programs are cached: outside the work tree, so a clean checkout
/// (and CI) reuses them.
fn cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("ferrolb")
}

/// One Go program to build.
pub struct GoProgram<'a> {
    /// The binary's name (and its cache folder's).
    pub name: &'a str,
    /// What to call it in progress messages.
    pub what: String,
    /// The Go module (go.mod, go.sum, *.go).
    pub src: PathBuf,
    /// The package to build, relative to the module.
    pub package: &'a str,
    /// The pinned version, part of the cache key and folder name.
    pub version: String,
    /// `-X` flags and the like.
    pub ldflags: Vec<String>,
    /// Checks to run before a build that is not cached.
    pub before_build: &'a dyn Fn() -> anyhow::Result<()>,
}

/// Builds `p` unless the same version, source, toolchain and flags were built
/// before; returns the binary. Older builds of the same program are removed.
pub fn build_cached(p: &GoProgram) -> anyhow::Result<PathBuf> {
    let go_version = run::output(go().arg("version"))?;
    let mut hasher = DefaultHasher::new();
    go_version.hash(&mut hasher);
    p.package.hash(&mut hasher);
    p.ldflags.hash(&mut hasher);
    let mut files: Vec<PathBuf> = fs::read_dir(&p.src)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| {
            f.extension().is_some_and(|x| x == "go")
                || f.file_name()
                    .is_some_and(|n| n == "go.mod" || n == "go.sum")
        })
        .collect();
    files.sort();
    for f in &files {
        f.file_name().hash(&mut hasher);
        fs::read(f)?.hash(&mut hasher);
    }
    let dir = cache_root().join(p.name);
    let out_dir = dir.join(format!("{}-{:016x}", p.version, hasher.finish()));
    let bin = out_dir.join(p.name);
    if bin.exists() {
        return Ok(bin);
    }

    (p.before_build)()?;
    fs::create_dir_all(&out_dir)?;
    let tmp = out_dir.join(format!("{}.tmp", p.name));
    eprintln!("building {}; the first build takes a while", p.what);
    let started = Instant::now();
    let mut ldflags = vec!["-s".to_string(), "-w".to_string()];
    ldflags.extend(p.ldflags.iter().cloned());
    run::status(
        go().current_dir(&p.src)
            .args(["build", "-trimpath", "-ldflags"])
            .arg(ldflags.join(" "))
            .arg("-o")
            .arg(&tmp)
            .arg(p.package),
    )?;
    fs::rename(&tmp, &bin)?;
    // Older builds are dead weight (over 100 MB each): keep only this one.
    for entry in fs::read_dir(&dir)?.flatten() {
        if entry.path() != out_dir {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    eprintln!("built {} in {:.0?}", bin.display(), started.elapsed());
    Ok(bin)
}

/// Points the symlink `link` at `bin` (replacing whatever it pointed at).
pub fn link(bin: &Path, link: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(link.parent().context("a link has a parent directory")?)?;
    if fs::read_link(link).ok().as_deref() != Some(bin) {
        let _ = fs::remove_file(link);
        std::os::unix::fs::symlink(bin, link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(())
}
