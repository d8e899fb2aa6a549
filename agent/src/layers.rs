//! Staged layers (issue 24): a re-push that changed only the app's own code skips the staging
//! container. After a full staging the node keeps the droplet's *additions* (what the buildpack
//! added to the source: `.venv`, `node_modules`, `.paas/*`, ...) in the dependency cache
//! (`depcache`, same bound and LRU), under a [`fast_key`] that covers everything such a
//! buildpack's result may depend on except the contents of the app's own code files. A later
//! build with the same key is the new source plus those additions ([`assemble`]), uploaded as
//! the droplet without a container.
//!
//! It is only kept when that is the result a full staging would give ([`additions`]): every
//! source file is in the droplet unchanged (same bytes, mode and owner; every source folder still
//! a folder with its mode), and the built-in buildpack that ran wrote `.paas/additive`, its
//! promise that what it added depends only on the app's dependency files, its list of paths, the
//! Procfile, the stack and the staging settings (Python without collectstatic, Node without a
//! build or install script, a static site without a `Staticfile`; never Go, binary, or a custom
//! buildpack, which could write the marker without keeping the promise).

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// The marker a built-in buildpack writes when its result is additive (see the module doc).
pub const MARKER: &str = ".paas/additive";

/// A source or droplet path without `./`, a leading `/` or a trailing `/`.
fn norm(path: &std::path::Path) -> String {
    let s = path.to_string_lossy();
    let s = s.strip_prefix("./").unwrap_or(&s);
    s.trim_start_matches('/').trim_end_matches('/').to_string()
}

/// The key of the staged layers of `source` (the app's tar): the stack, the buildpacks, the
/// dependency files' contents (as the dependency cache's key), every path with its kind and
/// mode (a file added, removed or made executable changes it; a file's contents do not), the
/// Procfile's contents and the staging environment (`PAAS_BUILDPACKS`, the operator's sources,
/// proxy) and CA bundle. `None` when the source cannot be read.
pub fn fast_key(
    stack: &str,
    buildpacks: &[u8],
    source: &[u8],
    env: &[String],
    ca: Option<&[u8]>,
) -> Option<String> {
    let mut paths: BTreeSet<(String, char, u32)> = BTreeSet::new();
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut archive = tar::Archive::new(source);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        let path = norm(&entry.path().ok()?);
        if path.is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        let k = if kind.is_dir() {
            'd'
        } else if kind.is_file() {
            'f'
        } else {
            // The controller sends files and folders only; anything else is not ours to judge.
            return None;
        };
        let mode = entry.header().mode().ok()? & 0o7777;
        if k == 'f' && (path == "Procfile" || crate::depcache::is_dependency_file(&path)) {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).ok()?;
            contents.insert(path.clone(), data);
        }
        paths.insert((path, k, mode));
    }
    let mut env: Vec<&String> = env.iter().collect();
    env.sort();
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(b"paas-staged-layers-1");
    field(stack.as_bytes());
    field(Sha256::digest(buildpacks).as_slice());
    field(ca.unwrap_or_default());
    for e in env {
        field(e.as_bytes());
    }
    for (path, kind, mode) in &paths {
        field(format!("{kind}{mode:o} {path}").as_bytes());
    }
    for (path, data) in &contents {
        field(path.as_bytes());
        field(data);
    }
    Some(format!("layers-{}", hex::encode(h.finalize())))
}

/// One source entry as staging must leave it.
struct Kept {
    dir: bool,
    mode: u32,
    uid: u64,
    gid: u64,
    sha: Vec<u8>,
}

fn kept_of(source: &[u8]) -> std::io::Result<BTreeMap<String, Kept>> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(source);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = norm(&entry.path()?);
        if path.is_empty() {
            continue;
        }
        let h = entry.header();
        let (dir, mode, uid, gid) = (
            h.entry_type().is_dir(),
            h.mode()? & 0o7777,
            h.uid()?,
            h.gid()?,
        );
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        let sha = Sha256::digest(&data).to_vec();
        out.insert(
            path,
            Kept {
                dir,
                mode,
                uid,
                gid,
                sha,
            },
        );
    }
    Ok(out)
}

/// The additions of `droplet` (a staged droplet, entries relative to `/app`) to `source`, as a
/// tar in the droplet's order; `None` when the staging was not additive: no marker among the
/// additions, a source file changed, moved or removed, a source folder changed, or a hard link
/// from an addition to a source file (whose contents change on the fast path).
pub fn additions(source: &[u8], droplet: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let kept = kept_of(source)?;
    let mut seen = BTreeSet::new();
    let mut added = BTreeSet::new();
    let mut out = tar::Builder::new(Vec::new());
    let mut marker = false;
    let mut archive = tar::Archive::new(droplet);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = norm(&entry.path()?);
        if path.is_empty() {
            continue;
        }
        let mut header = entry.header().clone();
        let kind = header.entry_type();
        if let Some(k) = kept.get(&path) {
            let same_owner = header.mode()? & 0o7777 == k.mode
                && header.uid()? == k.uid
                && header.gid()? == k.gid;
            let same = if k.dir {
                kind.is_dir() && same_owner
            } else if kind.is_file() {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                same_owner && Sha256::digest(&data).as_slice() == k.sha.as_slice()
            } else {
                false
            };
            if !same {
                return Ok(None);
            }
            seen.insert(path);
            continue;
        }
        if kind.is_file() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            marker |= path == MARKER;
            out.append_data(&mut header, &path, data.as_slice())?;
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            if kind.is_hard_link() && !added.contains(&norm(&target)) {
                return Ok(None);
            }
            header.set_size(0);
            out.append_link(&mut header, &path, &target)?;
        } else if kind.is_dir() {
            out.append_data(&mut header, &path, std::io::empty())?;
        } else {
            return Ok(None);
        }
        added.insert(path);
    }
    if !marker || seen.len() != kept.len() {
        return Ok(None);
    }
    Ok(Some(out.into_inner()?))
}

/// The droplet of `source` with the staged `additions`: the source's entries as they are, then
/// the additions. `None` when a source path is also an addition (the earlier staging would not
/// have been additive with it) or either tar is unreadable.
pub fn assemble(source: &[u8], additions: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let mut names = BTreeSet::new();
    let mut a = tar::Archive::new(additions);
    for e in a.entries()? {
        names.insert(norm(&e?.path()?));
    }
    let mut out = tar::Builder::new(Vec::new());
    let mut s = tar::Archive::new(source);
    for e in s.entries()? {
        let mut e = e?;
        let path = norm(&e.path()?);
        if path.is_empty() {
            continue;
        }
        if names.contains(&path) {
            return Ok(None);
        }
        let mut header = e.header().clone();
        let kind = header.entry_type();
        if kind.is_dir() {
            out.append_data(&mut header, &path, std::io::empty())?;
        } else if kind.is_file() {
            out.append_data(&mut header, &path, &mut e)?;
        } else {
            return Ok(None);
        }
    }
    let mut a = tar::Archive::new(additions);
    for e in a.entries()? {
        let mut e = e?;
        let path = norm(&e.path()?);
        let mut header = e.header().clone();
        let kind = header.entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = e.link_name()?.map(|t| t.into_owned()).unwrap_or_default();
            out.append_link(&mut header, &path, &target)?;
        } else {
            out.append_data(&mut header, &path, &mut e)?;
        }
    }
    Ok(Some(out.into_inner()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of (path, body, mode); a path ending in `/` is a folder.
    fn tar_of(entries: &[(&str, &str, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, body, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(*mode);
            h.set_uid(2000);
            h.set_gid(2000);
            h.set_mtime(0);
            if p.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            } else {
                h.set_size(body.len() as u64);
                b.append_data(&mut h, p, body.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn files_of(t: &[u8]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for e in tar::Archive::new(t).entries().unwrap() {
            let mut e = e.unwrap();
            let p = norm(&e.path().unwrap());
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            out.insert(p, s);
        }
        out
    }

    const APP: &[(&str, &str, u32)] = &[
        ("app.py", "print(1)\n", 0o644),
        ("requirements.txt", "flask==3.0\n", 0o644),
        ("lib/", "", 0o755),
        ("lib/util.py", "X = 1\n", 0o644),
    ];

    fn key(src: &[(&str, &str, u32)], env: &[&str]) -> String {
        let env: Vec<String> = env.iter().map(|e| e.to_string()).collect();
        fast_key("trixie", b"bp", &tar_of(src), &env, None).unwrap()
    }

    #[test]
    fn the_fast_key_ignores_code_contents_only() {
        let base = key(APP, &[]);
        let mut code = APP.to_vec();
        code[0] = ("app.py", "print(2)\n", 0o644);
        code[3] = ("./lib/util.py", "X = 2\n", 0o644);
        assert_eq!(key(&code, &[]), base, "code edits keep the key");

        let mut added = APP.to_vec();
        added.push(("lib/more.py", "", 0o644));
        let mut exec = APP.to_vec();
        exec[0] = ("app.py", "print(1)\n", 0o755);
        let mut deps = APP.to_vec();
        deps[1] = ("requirements.txt", "flask==3.1\n", 0o644);
        let mut procfile = APP.to_vec();
        procfile.push(("Procfile", "web: python app.py\n", 0o644));
        let mut procfile2 = procfile.clone();
        procfile2[4] = ("Procfile", "web: python3 app.py\n", 0o644);
        for (what, other) in [
            ("a file added", key(&added, &[])),
            ("a mode changed", key(&exec, &[])),
            ("requirements.txt changed", key(&deps, &[])),
            ("a Procfile added", key(&procfile, &[])),
            (
                "the buildpacks named",
                key(APP, &["PAAS_BUILDPACKS=python"]),
            ),
        ] {
            assert_ne!(other, base, "{what}");
        }
        assert_ne!(key(&procfile, &[]), key(&procfile2, &[]), "Procfile edited");
        let src = tar_of(APP);
        for other in [
            fast_key("bookworm", b"bp", &src, &[], None),
            fast_key("trixie", b"bp2", &src, &[], None),
            fast_key("trixie", b"bp", &src, &[], Some(b"ca".as_slice())),
        ] {
            assert_ne!(other.unwrap(), base);
        }
    }

    /// A staged droplet of APP: the source unchanged plus a venv and the driver's files.
    fn staged(marker: bool) -> Vec<(&'static str, &'static str, u32)> {
        let mut d = APP.to_vec();
        d.extend([
            (".venv/", "", 0o755),
            (".venv/bin/python", "#!", 0o755),
            (".paas/", "", 0o755),
            (".paas/processes", "web: exec python3 app.py\n", 0o644),
            (".paas/buildpack", "python\n", 0o644),
        ]);
        if marker {
            d.push((MARKER, "", 0o644));
        }
        d
    }

    #[test]
    fn additions_are_kept_only_when_the_staging_was_additive() {
        let src = tar_of(APP);
        let add = additions(&src, &tar_of(&staged(true)))
            .unwrap()
            .expect("additive");
        let names: Vec<String> = files_of(&add).into_keys().collect();
        assert_eq!(
            names,
            [
                ".paas",
                ".paas/additive",
                ".paas/buildpack",
                ".paas/processes",
                ".venv",
                ".venv/bin/python"
            ]
        );

        assert!(
            additions(&src, &tar_of(&staged(false))).unwrap().is_none(),
            "no marker, no entry"
        );
        let mut changed = staged(true);
        changed[3] = ("lib/util.py", "X = 1 # collected\n", 0o644);
        assert!(
            additions(&src, &tar_of(&changed)).unwrap().is_none(),
            "a source file changed (collectstatic, a build step)"
        );
        let mut chmod = staged(true);
        chmod[0] = ("app.py", "print(1)\n", 0o755);
        assert!(additions(&src, &tar_of(&chmod)).unwrap().is_none());
        let mut removed = staged(true);
        removed.remove(3);
        assert!(
            additions(&src, &tar_of(&removed)).unwrap().is_none(),
            "a source file removed"
        );
        let mut with_marker = APP.to_vec();
        with_marker.extend([(".paas/", "", 0o755), (MARKER, "", 0o644)]);
        let mut d = staged(false);
        d.push((MARKER, "", 0o644));
        assert!(
            additions(&tar_of(&with_marker), &tar_of(&d))
                .unwrap()
                .is_none(),
            "a marker the app brought is not the buildpack's"
        );
    }

    #[test]
    fn the_assembled_droplet_is_the_new_source_plus_the_additions() {
        let add = additions(&tar_of(APP), &tar_of(&staged(true)))
            .unwrap()
            .unwrap();
        let mut code = APP.to_vec();
        code[0] = ("app.py", "print(2)\n", 0o644);
        let droplet = assemble(&tar_of(&code), &add).unwrap().unwrap();
        let mut want = staged(true);
        want[0] = ("app.py", "print(2)\n", 0o644);
        assert_eq!(files_of(&droplet), files_of(&tar_of(&want)));
        // Owners and modes are the source's and the staging's.
        for e in tar::Archive::new(droplet.as_slice()).entries().unwrap() {
            let e = e.unwrap();
            let p = norm(&e.path().unwrap());
            assert_eq!(e.header().uid().unwrap(), 2000, "{p}");
            if p == ".venv/bin/python" {
                assert_eq!(e.header().mode().unwrap(), 0o755);
            }
        }

        let mut clash = code.clone();
        clash.push((".venv/", "", 0o755));
        assert!(
            assemble(&tar_of(&clash), &add).unwrap().is_none(),
            "a source path that is an addition: no fast path"
        );
    }
}
