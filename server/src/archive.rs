//! Checking an uploaded zip and turning it into a droplet tar, without trusting anything in it.
//! The entry count is read from the end-of-central-directory record before the zip is parsed (so a
//! million-entry archive costs nothing); every entry must have a safe relative path, be a regular
//! file or a directory (no links, devices or FIFOs); bytes are counted as they are actually
//! inflated, never taken from headers; modes are masked to 0644/0755 and owners set to the
//! unprivileged app user. Everything here is blocking: call it from `spawn_blocking`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path};

/// The uid/gid apps run as inside containers; droplet files belong to it.
pub const APP_UID: u64 = 2000;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_entries: usize,
    pub max_unpacked_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the upload is not a valid zip archive: {0}")]
    NotZip(String),
    #[error("the archive is empty")]
    Empty,
    #[error("the archive has {0} entries; at most {1} are allowed")]
    TooManyEntries(u64, usize),
    #[error("unsafe path in archive: {0:?} (absolute paths and '..' are not allowed)")]
    UnsafePath(String),
    #[error("{0:?} is a symbolic link; links are not allowed in an app archive")]
    Link(String),
    #[error("{0:?} is not a regular file or directory")]
    SpecialFile(String),
    #[error("the archive unpacks to more than {0} bytes (a zip bomb?)")]
    TooLarge(u64),
    #[error("I/O while unpacking: {0}")]
    Io(#[from] io::Error),
}

impl ArchiveError {
    /// Whether the client sent something wrong (4xx) rather than the server failing.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, ArchiveError::Io(_))
    }
}

/// What unpacking found: enough for staging to decide how to run the app.
#[derive(Debug, Default)]
pub struct Unpacked {
    pub files: u64,
    pub bytes: u64,
    /// Text of a top-level `Procfile`, if any.
    pub procfile: Option<String>,
    /// Top-level file names, for detection.
    pub top_level: Vec<String>,
}

/// Reads the entry count from the end-of-central-directory record (zip64 aware) without parsing
/// the central directory.
pub fn declared_entries(f: &mut File) -> Result<u64, ArchiveError> {
    let len = f.seek(SeekFrom::End(0))?;
    let tail_len = len.min(65_535 + 22);
    f.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail)?;
    let pos = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(|| ArchiveError::NotZip("no end of central directory record".into()))?;
    let total = u64::from(u16::from_le_bytes([tail[pos + 10], tail[pos + 11]]));
    if total != 0xFFFF {
        return Ok(total);
    }
    // zip64: the locator sits right before the EOCD record and points at the zip64 EOCD.
    let eocd_abs = len - tail_len + pos as u64;
    if eocd_abs < 20 {
        return Err(ArchiveError::NotZip("truncated zip64 locator".into()));
    }
    let mut loc = [0u8; 20];
    f.seek(SeekFrom::Start(eocd_abs - 20))?;
    f.read_exact(&mut loc)?;
    if loc[..4] != [0x50, 0x4b, 0x06, 0x07] {
        return Ok(total);
    }
    let z64 = u64::from_le_bytes(
        loc[8..16]
            .try_into()
            .map_err(|_| ArchiveError::NotZip("bad locator".into()))?,
    );
    let mut rec = [0u8; 40];
    f.seek(SeekFrom::Start(z64))?;
    f.read_exact(&mut rec)
        .map_err(|_| ArchiveError::NotZip("truncated zip64 record".into()))?;
    if rec[..4] != [0x50, 0x4b, 0x06, 0x06] {
        return Err(ArchiveError::NotZip(
            "bad zip64 end of central directory".into(),
        ));
    }
    Ok(u64::from_le_bytes(rec[32..40].try_into().map_err(
        |_| ArchiveError::NotZip("bad zip64 record".into()),
    )?))
}

fn safe_relative(name: &str) -> Result<String, ArchiveError> {
    let unsafe_path = || ArchiveError::UnsafePath(name.to_string());
    if name.starts_with('/') || name.starts_with('\\') || name.contains('\\') || name.contains('\0')
    {
        return Err(unsafe_path());
    }
    let mut parts = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(unsafe_path)?.to_string()),
            Component::CurDir => {}
            _ => return Err(unsafe_path()),
        }
    }
    if parts.is_empty() {
        return Err(unsafe_path());
    }
    Ok(parts.join("/"))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(APP_UID);
    h.set_gid(APP_UID);
    // A fixed mtime keeps the droplet's hash a function of its content.
    h.set_mtime(0);
    h
}

/// Checks `zip_path` and writes its content as a tar to `out`.
pub fn zip_to_droplet_tar<W: Write>(
    zip_path: &Path,
    limits: &Limits,
    out: W,
) -> Result<Unpacked, ArchiveError> {
    let mut tar = tar::Builder::new(out);
    let mut dirs = HashSet::new();
    let mut found = Unpacked::default();
    append_zip(
        zip_path,
        limits,
        &mut tar,
        &mut dirs,
        &mut found,
        &mut |_, _, _, _| Ok(()),
    )?;
    if found.files == 0 {
        return Err(ArchiveError::Empty);
    }
    tar.into_inner()?.flush()?;
    Ok(found)
}

/// Adds every parent directory of `name` (or `name` itself when `is_dir`) not yet in `dirs`,
/// owned by the app user; otherwise the engine would create it as root and the app could not
/// write there.
pub fn add_parents<W: Write>(
    tar: &mut tar::Builder<W>,
    dirs: &mut HashSet<String>,
    name: &str,
    is_dir: bool,
) -> io::Result<()> {
    let mut parent = String::new();
    let comps: Vec<&str> = name.split('/').collect();
    let upto = if is_dir { comps.len() } else { comps.len() - 1 };
    for c in &comps[..upto] {
        if !parent.is_empty() {
            parent.push('/');
        }
        parent.push_str(c);
        if dirs.insert(parent.clone()) {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, format!("{parent}/"), io::empty())?;
        }
    }
    Ok(())
}

/// Checks a path from the client: relative, no `..`, no backslashes; returns it normalized.
pub fn checked_path(name: &str) -> Result<String, ArchiveError> {
    safe_relative(name)
}

/// Appends one regular file of `size` bytes read from `content` at `name`.
pub fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    exec: bool,
    size: u64,
    content: impl Read,
) -> io::Result<()> {
    let mut h = header(
        tar::EntryType::Regular,
        if exec { 0o755 } else { 0o644 },
        size,
    );
    tar.append_data(&mut h, name, content)
}

/// Called for each regular file of a zip: (name, scratch file at its start, size, executable).
pub type OnFile<'a> = dyn FnMut(&str, &mut File, u64, bool) -> Result<(), ArchiveError> + 'a;

/// Checks `zip_path` and appends its entries to `tar`, counting into `found`. `on_file` sees each
/// regular file once written (name, its bytes at the start of the scratch file, size, whether it
/// is executable), e.g. to keep it for incremental uploads. Does not finish the tar, so more entries may follow.
pub fn append_zip<W: Write>(
    zip_path: &Path,
    limits: &Limits,
    tar: &mut tar::Builder<W>,
    dirs: &mut HashSet<String>,
    found: &mut Unpacked,
    on_file: &mut OnFile<'_>,
) -> Result<(), ArchiveError> {
    let mut file = File::open(zip_path)?;
    let declared = declared_entries(&mut file)?;
    if declared > limits.max_entries as u64 {
        return Err(ArchiveError::TooManyEntries(declared, limits.max_entries));
    }
    file.seek(SeekFrom::Start(0))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| ArchiveError::NotZip(e.to_string()))?;
    if zip.len() > limits.max_entries {
        return Err(ArchiveError::TooManyEntries(
            zip.len() as u64,
            limits.max_entries,
        ));
    }
    let mut scratch = tempfile::tempfile()?;

    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
        let raw_name = entry.name().to_string();
        let name = safe_relative(&raw_name)?;
        // Belt and braces: the zip crate's own check must agree.
        if entry.enclosed_name().is_none() {
            return Err(ArchiveError::UnsafePath(raw_name));
        }
        if entry.is_symlink() {
            return Err(ArchiveError::Link(raw_name));
        }
        let mode = entry.unix_mode();
        let file_type = mode.map(|m| m & 0o170000).unwrap_or(0);
        let is_dir = entry.is_dir() || file_type == 0o040000;
        if !is_dir && file_type != 0 && file_type != 0o100000 {
            return Err(ArchiveError::SpecialFile(raw_name));
        }
        add_parents(tar, dirs, &name, is_dir)?;
        if is_dir {
            continue;
        }

        scratch.set_len(0)?;
        scratch.seek(SeekFrom::Start(0))?;
        let budget = limits.max_unpacked_bytes.saturating_sub(found.bytes);
        let written = io::copy(&mut (&mut entry).take(budget + 1), &mut scratch)?;
        if written > budget {
            return Err(ArchiveError::TooLarge(limits.max_unpacked_bytes));
        }
        found.bytes += written;
        found.files += 1;
        scratch.seek(SeekFrom::Start(0))?;
        if name == "Procfile" && written <= 64 * 1024 {
            let mut s = String::new();
            scratch.read_to_string(&mut s).ok();
            found.procfile = Some(s);
            scratch.seek(SeekFrom::Start(0))?;
        }
        if !name.contains('/') {
            found.top_level.push(name.clone());
        }
        let exec = mode.is_some_and(|m| m & 0o111 != 0);
        on_file(&name, &mut scratch, written, exec)?;
        scratch.seek(SeekFrom::Start(0))?;
        append_file(tar, &name, exec, written, (&mut scratch).take(written))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn limits() -> Limits {
        Limits {
            max_entries: 1000,
            max_unpacked_bytes: 10 * 1024 * 1024,
        }
    }

    fn make_zip(build: impl FnOnce(&mut zip::ZipWriter<File>)) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut w = zip::ZipWriter::new(f.reopen().unwrap());
        build(&mut w);
        w.finish().unwrap();
        f
    }

    fn entries_of(tar_bytes: &[u8]) -> Vec<(String, u32, u64)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn good_archive_becomes_tar_with_app_owner_and_masked_modes() {
        let z = make_zip(|w| {
            w.start_file("Procfile", SimpleFileOptions::default())
                .unwrap();
            w.write_all(b"web: python3 app.py\n").unwrap();
            w.start_file(
                "bin/run",
                SimpleFileOptions::default().unix_permissions(0o4755),
            )
            .unwrap();
            w.write_all(b"#!/bin/sh\n").unwrap();
        });
        let mut out = Vec::new();
        let u = zip_to_droplet_tar(z.path(), &limits(), &mut out).unwrap();
        assert_eq!(u.files, 2);
        assert_eq!(u.procfile.as_deref(), Some("web: python3 app.py\n"));
        let e = entries_of(&out);
        assert!(e.contains(&("Procfile".into(), 0o644, 2000)), "{e:?}");
        assert!(e.contains(&("bin/".into(), 0o755, 2000)), "{e:?}");
        assert!(
            e.contains(&("bin/run".into(), 0o755, 2000)),
            "setuid must be masked: {e:?}"
        );
    }

    #[test]
    fn traversal_and_absolute_paths_are_refused() {
        for bad in ["../evil", "a/../../evil", "/etc/passwd"] {
            let z = make_zip(|w| {
                w.start_file(bad, SimpleFileOptions::default()).unwrap();
                w.write_all(b"x").unwrap();
            });
            let err = zip_to_droplet_tar(z.path(), &limits(), &mut Vec::new()).unwrap_err();
            assert!(matches!(err, ArchiveError::UnsafePath(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn symlinks_are_refused() {
        let z = make_zip(|w| {
            w.add_symlink("link", "/etc/passwd", SimpleFileOptions::default())
                .unwrap();
        });
        let err = zip_to_droplet_tar(z.path(), &limits(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, ArchiveError::Link(_)), "{err}");
    }

    #[test]
    fn bombs_are_stopped_by_counted_bytes() {
        let z = make_zip(|w| {
            w.start_file("zeros", SimpleFileOptions::default()).unwrap();
            let chunk = vec![0u8; 1024 * 1024];
            for _ in 0..20 {
                w.write_all(&chunk).unwrap();
            }
        });
        assert!(std::fs::metadata(z.path()).unwrap().len() < 200 * 1024);
        let err = zip_to_droplet_tar(z.path(), &limits(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge(_)), "{err}");
    }

    #[test]
    fn too_many_entries_are_refused_before_parsing() {
        let z = make_zip(|w| {
            for i in 0..1001 {
                w.start_file(format!("f{i}"), SimpleFileOptions::default())
                    .unwrap();
            }
        });
        let err = zip_to_droplet_tar(z.path(), &limits(), &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, ArchiveError::TooManyEntries(1001, 1000)),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_not_a_zip() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"this is not a zip file at all").unwrap();
        let err = zip_to_droplet_tar(f.path(), &limits(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, ArchiveError::NotZip(_)), "{err}");
    }
}
