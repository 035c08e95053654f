//! Which of the files a run wrote are its products (witness/cilock semantics).
//!
//! The trace sees every write of the process tree, including tools' own bookkeeping outside
//! the working directory (containers-storage locks, `blob-info-cache-v1.boltdb`,
//! `/etc/cni/net.d/cni.lock`, `~/.cache/...`). Those stay in the command-run `fileOps` for the
//! audit; the products are:
//! - files inside the working directory, except built-in cache/lock patterns and
//!   `--attestor-product-exclude-glob`;
//! - anywhere: image archives and OCI layouts (what the oci attestor analyses), and paths
//!   matching `--attestor-product-include-glob`;
//! - never: the run's private files (signing key, passphrase file, the outfile).
//!
//! Globs match the recorded path: relative to the working directory inside it, absolute
//! outside; `*` also crosses `/`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::inspect::{self, ArchiveKind};
use crate::products;

/// Caches and locks that tools write inside a working directory as a side effect; extended by
/// `--attestor-product-exclude-glob`.
pub const BUILTIN_EXCLUDES: &[&str] = &[
    ".git/**",
    "**/.cache/**",
    "**/__pycache__/**",
    "**/*.pyc",
    "**/node_modules/.cache/**",
    "**/.gradle/caches/**",
    "**/*.boltdb",
    "**/*.lck",
    "**/.lock",
    "**/*.swp",
];

/// The product scope of one run.
#[derive(Debug)]
pub struct ProductScope {
    working_dir: PathBuf,
    include: GlobSet,
    exclude: GlobSet,
    /// Canonical paths of files that are never materials or products.
    private_files: Vec<PathBuf>,
}

fn glob_set(flag: &str, patterns: &[&str]) -> anyhow::Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder
            .add(Glob::new(pattern).with_context(|| format!("{flag}: invalid glob {pattern:?}"))?);
    }
    builder
        .build()
        .with_context(|| format!("{flag}: invalid globs"))
}

impl ProductScope {
    /// `private_files` that do not exist (yet) are compared by their absolute path.
    pub fn new(
        working_dir: &Path,
        include: &[String],
        exclude: &[String],
        private_files: &[&Path],
    ) -> anyhow::Result<ProductScope> {
        let include: Vec<&str> = include.iter().map(String::as_str).collect();
        let exclude: Vec<&str> = BUILTIN_EXCLUDES
            .iter()
            .copied()
            .chain(exclude.iter().map(String::as_str))
            .collect();
        Ok(ProductScope {
            working_dir: working_dir.to_path_buf(),
            include: glob_set("--attestor-product-include-glob", &include)?,
            exclude: glob_set("--attestor-product-exclude-glob", &exclude)?,
            private_files: private_files
                .iter()
                .map(|path| canonical_even_if_missing(&working_dir.join(path)))
                .collect(),
        })
    }

    /// The signing key, its passphrase file and the outfile are never materials or products.
    pub fn is_private(&self, path: &Path) -> bool {
        self.private_files.contains(&canonical(path))
    }

    /// [`ProductScope::is_private`] for a path a [`crate::snapshot::Snapshot`] of the
    /// (canonical) working directory found: the walk follows no symlink, so the path is
    /// canonical already and is compared as it is, without a `realpath` per file.
    pub fn is_private_found(&self, path: &Path) -> bool {
        self.private_files.iter().any(|private| private == path)
    }

    /// Excluded by a glob (built-in or `--attestor-product-exclude-glob`) and not included
    /// again by `--attestor-product-include-glob`: neither a product nor a change the
    /// working-directory comparison looks at.
    pub fn is_excluded(&self, path: &Path) -> bool {
        let recorded = products::recorded_path(path, &self.working_dir);
        self.exclude.is_match(&recorded) && !self.include.is_match(&recorded)
    }

    /// The products among the files the run `written`, sorted by the path recorded for them
    /// (relative inside the working directory, absolute outside). Image archives are recognised
    /// by their content (the files are read only as far as their first bytes).
    pub fn products(&self, written: Vec<PathBuf>) -> Vec<PathBuf> {
        let layout_dirs = products::layout_dirs(&written, |path| path.is_file());
        let mut selected: Vec<PathBuf> = written
            .into_iter()
            .filter(|path| !self.is_private(path))
            .filter(|path| {
                let recorded = products::recorded_path(path, &self.working_dir);
                if self.include.is_match(&recorded) {
                    return true;
                }
                if self.exclude.is_match(&recorded) {
                    return false;
                }
                path.starts_with(&self.working_dir)
                    || layout_dirs.iter().any(|dir| path.starts_with(dir))
                    || is_image_archive(path)
            })
            .collect();
        selected.sort_by_cached_key(|path| products::recorded_path(path, &self.working_dir));
        selected.dedup();
        selected
    }
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// A file that does not exist yet (the outfile) is named by its canonical directory.
fn canonical_even_if_missing(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| {
        match (path.parent().map(Path::canonicalize), path.file_name()) {
            (Some(Ok(dir)), Some(name)) => dir.join(name),
            _ => path.to_path_buf(),
        }
    })
}

fn is_image_archive(path: &Path) -> bool {
    matches!(
        inspect::sniff(path),
        Ok(Some(ArchiveKind::Tar | ArchiveKind::GzipTar))
    )
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn working_dir_archives_and_includes_are_products_caches_and_private_files_are_not() {
        let work = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let w = work.path().canonicalize().unwrap();
        let e = elsewhere.path().canonicalize().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(1);
        header.set_cksum();
        tar.append_data(&mut header, "f", &b"x"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let files: Vec<(PathBuf, &[u8])> = vec![
            (w.join("z-out.txt"), b"product"),
            (w.join("a/.cache/x"), b"cache"),
            (w.join("key.pem"), b"key"),
            (w.join("att.json"), b"old"),
            (w.join("build.log"), b"excluded by flag"),
            (e.join("blob-info-cache-v1.boltdb"), b"bolt"),
            (e.join("cni.lock"), b"lock"),
            (e.join("image.tar"), &tar),
            (e.join("wanted.sbom"), b"included by flag"),
            (e.join("layout/oci-layout"), b"{}"),
            (e.join("layout/index.json"), b"{}"),
            (e.join("layout/blobs/sha256/ab"), b"blob"),
        ];
        for (path, content) in &files {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        let scope = ProductScope::new(
            &w,
            &["*.sbom".to_owned()],
            &["*.log".to_owned()],
            &[Path::new("key.pem"), &w.join("att.json")],
        )
        .unwrap();
        let written: Vec<PathBuf> = files.iter().rev().map(|(path, _)| path.clone()).collect();
        let expected = vec![
            e.join("image.tar"),
            e.join("layout/blobs/sha256/ab"),
            e.join("layout/index.json"),
            e.join("layout/oci-layout"),
            e.join("wanted.sbom"),
            w.join("z-out.txt"),
        ];
        let mut expected_sorted = expected.clone();
        expected_sorted.sort_by_key(|path| products::recorded_path(path, &w));
        assert_eq!(scope.products(written), expected_sorted);
        assert!(scope.is_private(&w.join("key.pem")));
    }

    #[test]
    fn bad_globs_name_the_flag() {
        let error = ProductScope::new(Path::new("/"), &["[".to_owned()], &[], &[]).unwrap_err();
        assert!(
            format!("{error:#}").contains("--attestor-product-include-glob"),
            "{error:#}"
        );
    }
}
