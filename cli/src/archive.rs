//! Zips an app folder for `paas push`: deflate, regular files and directories only, unix modes
//! kept (so `bin/start` stays executable), `.git` skipped, and the gitignore-style patterns of
//! `.paasignore` and `.cfignore` (in the folder's root) honoured.
//!
//! Symlinks are never followed and never stored: a link could point out of the tree, and the
//! controller refuses links anyway. They are reported in [`Archive::skipped`] for a warning.

use anyhow::{bail, Context};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// Files whose patterns say what not to upload, read from the folder's root.
pub const IGNORE_FILES: [&str; 2] = [".paasignore", ".cfignore"];

/// A finished archive in an anonymous temp file (gone when dropped), positioned at its start.
#[derive(Debug)]
pub struct Archive {
    pub file: File,
    /// Size of the zip itself, in bytes: what goes over the wire.
    pub size: u64,
    /// Regular files stored.
    pub files: u64,
    /// Directories stored.
    pub dirs: u64,
    /// Sum of the stored files' sizes before compression.
    pub content_bytes: u64,
    /// Entries left out, with why (symlinks, sockets, non-UTF-8 names).
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// One file the push would send, by content (for incremental upload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedFile {
    /// `a/b/c`, as in the zip.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub executable: bool,
}

/// Hashes every file `build` would zip, with the same ignore rules, without zipping anything.
pub fn scan(root: &Path) -> anyhow::Result<Vec<ScannedFile>> {
    check_root(root)?;
    let mut b = Builder::new(root, None, HashSet::new())?;
    b.walk(Path::new(""))?;
    Ok(b.scanned)
}

/// Zips `root` into a temp file. Fails at once if `root` is missing, not a directory, or empty.
pub fn build(root: &Path) -> anyhow::Result<Archive> {
    build_excluding(root, &HashSet::new())
}

/// Like [`build`], leaving out the files whose paths are in `exclude` (the server holds them).
pub fn build_excluding(root: &Path, exclude: &HashSet<String>) -> anyhow::Result<Archive> {
    check_root(root)?;
    let tmp = tempfile::tempfile().context("cannot create a temp file for the archive")?;
    let mut b = Builder::new(root, Some(ZipWriter::new(tmp)), exclude.clone())?;
    b.walk(Path::new(""))?;
    if b.files + b.excluded == 0 {
        bail!(
            "nothing to push: every file in {} is ignored or not a regular file",
            root.display()
        );
    }
    let Builder {
        zip,
        files,
        dirs,
        content_bytes,
        skipped,
        ..
    } = b;
    let zip = zip.context("the archive writer is missing")?;
    let mut file = zip.finish().context("cannot finish the archive")?;
    let size = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    Ok(Archive {
        file,
        size,
        files,
        dirs,
        content_bytes,
        skipped,
    })
}

pub fn check_root(root: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} does not exist", root.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", root.display())),
    };
    if !meta.is_dir() {
        bail!(
            "{} is not a directory: push a folder with -p PATH",
            root.display()
        );
    }
    let mut entries =
        std::fs::read_dir(root).with_context(|| format!("cannot read {}", root.display()))?;
    if entries.next().is_none() {
        bail!("{} is empty: nothing to push", root.display());
    }
    Ok(())
}

fn load_ignores(root: &Path) -> anyhow::Result<Gitignore> {
    let mut gb = GitignoreBuilder::new(root);
    for name in IGNORE_FILES {
        let path = root.join(name);
        if path.is_file() {
            if let Some(e) = gb.add(&path) {
                return Err(anyhow::anyhow!("{e}"))
                    .with_context(|| format!("invalid pattern in {}", path.display()));
            }
        }
    }
    gb.build().context("invalid ignore patterns")
}

struct Builder {
    root: PathBuf,
    ignore: Gitignore,
    /// `None`: only hash files into `scanned`.
    zip: Option<ZipWriter<File>>,
    files: u64,
    dirs: u64,
    content_bytes: u64,
    skipped: Vec<Skipped>,
    exclude: HashSet<String>,
    excluded: u64,
    scanned: Vec<ScannedFile>,
}

impl Builder {
    fn new(
        root: &Path,
        zip: Option<ZipWriter<File>>,
        exclude: HashSet<String>,
    ) -> anyhow::Result<Self> {
        Ok(Builder {
            root: root.to_path_buf(),
            ignore: load_ignores(root)?,
            zip,
            files: 0,
            dirs: 0,
            content_bytes: 0,
            skipped: Vec::new(),
            exclude,
            excluded: 0,
            scanned: Vec::new(),
        })
    }

    /// Adds everything under `rel` (relative to the root), in name order so archives are stable.
    fn walk(&mut self, rel: &Path) -> anyhow::Result<()> {
        let dir = self.root.join(rel);
        let mut entries = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("cannot read {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            if name == ".git" {
                continue;
            }
            let rel = rel.join(&name);
            let meta = std::fs::symlink_metadata(self.root.join(&rel))
                .with_context(|| format!("cannot read {}", rel.display()))?;
            let ft = meta.file_type();
            if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
                self.skip(&rel, "not a regular file or directory");
                continue;
            }
            if self.ignore.matched(&rel, ft.is_dir()).is_ignore() {
                continue;
            }
            if ft.is_symlink() {
                let target =
                    std::fs::read_link(self.root.join(&rel)).map(|t| t.display().to_string());
                self.skip(
                    &rel,
                    &format!("symlink to {}", target.unwrap_or_else(|_| "?".into())),
                );
                continue;
            }
            let Some(zip_name) = zip_name(&rel) else {
                self.skip(&rel, "name is not valid UTF-8");
                continue;
            };
            let options = options_for(&meta);
            if ft.is_dir() {
                if let Some(zip) = self.zip.as_mut() {
                    zip.add_directory(format!("{zip_name}/"), options)?;
                }
                self.dirs += 1;
                self.walk(&rel)?;
                continue;
            }
            let path = self.root.join(&rel);
            let mut src =
                File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let Some(zip) = self.zip.as_mut() else {
                let mut h = Sha256::new();
                let size = std::io::copy(&mut src, &mut h)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                self.scanned.push(ScannedFile {
                    path: zip_name,
                    size,
                    sha256: hex::encode(h.finalize()),
                    executable: is_executable(&meta),
                });
                continue;
            };
            if self.exclude.contains(&zip_name) {
                self.excluded += 1;
                continue;
            }
            let large = meta.len() >= u64::from(u32::MAX);
            zip.start_file(zip_name, options.large_file(large))?;
            let n = std::io::copy(&mut src, zip)
                .with_context(|| format!("cannot add {} to the archive", path.display()))?;
            self.files += 1;
            self.content_bytes += n;
        }
        Ok(())
    }

    fn skip(&mut self, rel: &Path, reason: &str) {
        self.skipped.push(Skipped {
            path: rel.display().to_string(),
            reason: reason.to_string(),
        });
    }
}

/// `a/b/c` with forward slashes, or `None` for a name that is not UTF-8.
fn zip_name(rel: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

fn is_executable(meta: &Metadata) -> bool {
    mode_of(meta) & 0o111 != 0
}

fn options_for(meta: &Metadata) -> SimpleFileOptions {
    let mut o = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(mode_of(meta));
    if let Some(t) = meta.modified().ok().and_then(zip_time) {
        o = o.last_modified_time(t);
    }
    o
}

#[cfg(unix)]
fn mode_of(meta: &Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn mode_of(meta: &Metadata) -> u32 {
    if meta.is_dir() {
        0o755
    } else {
        0o644
    }
}

/// Zip stores local calendar time from 1980 on; anything it cannot hold keeps zip's default.
fn zip_time(t: std::time::SystemTime) -> Option<zip::DateTime> {
    use chrono::{Datelike, Timelike};
    let t: chrono::DateTime<chrono::Utc> = t.into();
    zip::DateTime::from_date_and_time(
        u16::try_from(t.year()).ok()?,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// name -> (unix mode, content) of every entry.
    fn entries(a: &mut Archive) -> BTreeMap<String, (u32, String)> {
        let mut z = zip::ZipArchive::new(&mut a.file).unwrap();
        let mut out = BTreeMap::new();
        for i in 0..z.len() {
            let mut f = z.by_index(i).unwrap();
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            out.insert(f.name().to_string(), (f.unix_mode().unwrap_or(0), s));
        }
        out
    }

    #[test]
    fn zips_files_and_dirs_skipping_git_and_ignored() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "app.py", "print('hi')");
        write(r, "lib/util.py", "x = 1");
        write(r, ".git/HEAD", "ref: refs/heads/main");
        write(r, "sub/.git", "gitdir: ../.git/modules/sub");
        write(r, "node_modules/a/index.js", "junk");
        write(r, "debug.log", "junk");
        write(r, "logs/keep.log", "kept? no");
        write(r, "tmp/cache.bin", "junk");
        write(r, "docs/important.log", "negated");
        write(
            r,
            ".paasignore",
            "node_modules/\n*.log\n!docs/important.log\n# comment\n",
        );
        write(r, ".cfignore", "/tmp\n");
        let mut a = build(r).unwrap();
        let e = entries(&mut a);
        let names: Vec<&str> = e.keys().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                ".cfignore",
                ".paasignore",
                "app.py",
                "docs/",
                "docs/important.log",
                "lib/",
                "lib/util.py",
                "logs/",
                "sub/"
            ]
        );
        assert_eq!(a.files, 5);
        assert_eq!(a.dirs, 4);
        assert_eq!(e["app.py"].1, "print('hi')");
        assert_eq!(a.size, a.file.metadata().unwrap().len());
        assert_eq!(
            a.content_bytes,
            e.values().map(|(_, c)| c.len() as u64).sum::<u64>()
        );
        assert!(a.skipped.is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn keeps_modes_and_skips_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "bin/start", "#!/bin/sh\necho hi\n");
        std::fs::set_permissions(r.join("bin/start"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        write(r, "config.txt", "c");
        std::fs::set_permissions(r.join("config.txt"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        write(outside.path(), "secret", "do not upload");
        std::os::unix::fs::symlink(outside.path().join("secret"), r.join("leak")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("leakdir")).unwrap();
        let mut a = build(r).unwrap();
        let e = entries(&mut a);
        assert_eq!(e["bin/start"].0 & 0o777, 0o755);
        assert_eq!(
            e["bin/start"].0 & 0o170000,
            0o100000,
            "stored as a regular file"
        );
        assert_eq!(e["config.txt"].0 & 0o777, 0o640);
        assert!(e.contains_key("bin/"));
        assert!(!e.keys().any(|k| k.starts_with("leak")));
        assert!(!e.values().any(|(_, c)| c.contains("do not upload")));
        let skipped: Vec<&str> = a.skipped.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(skipped, ["leak", "leakdir"]);
        assert!(a.skipped[0].reason.starts_with("symlink to "));
        assert_eq!(a.files, 2);
    }

    #[test]
    fn refuses_missing_non_dir_empty_and_all_ignored() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let msg = |p: &Path| build(p).unwrap_err().to_string();
        assert!(msg(&r.join("nope")).ends_with("does not exist"));
        write(r, "file.txt", "x");
        assert!(msg(&r.join("file.txt")).contains("is not a directory"));
        std::fs::create_dir(r.join("empty")).unwrap();
        assert!(msg(&r.join("empty")).contains("is empty"));
        write(r, "ign/.paasignore", "*\n");
        write(r, "ign/a.txt", "x");
        assert!(msg(&r.join("ign")).starts_with("nothing to push"));
    }

    #[test]
    fn compresses_with_deflate() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "big.txt", &"hello world ".repeat(10_000));
        let mut a = build(d.path()).unwrap();
        assert!(a.size < 10_000, "zip is {} bytes", a.size);
        let mut z = zip::ZipArchive::new(&mut a.file).unwrap();
        assert_eq!(
            z.by_name("big.txt").unwrap().compression(),
            CompressionMethod::Deflated
        );
    }
}
