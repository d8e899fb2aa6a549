//! Fuzzes the upload checker with arbitrary bytes as the "zip": it must never panic, never accept
//! more than its limits, and every path it writes into the droplet tar must be relative and
//! free of `..`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;

// The module is compiled from the server's own source, so the fuzzer checks exactly what runs.
#[allow(dead_code)]
#[path = "../../server/src/archive.rs"]
mod archive;

fuzz_target!(|data: &[u8]| {
    let Ok(mut f) = tempfile::NamedTempFile::new() else { return };
    if f.write_all(data).is_err() {
        return;
    }
    let limits = archive::Limits { max_entries: 1000, max_unpacked_bytes: 8 << 20 };
    let mut out = Vec::new();
    if let Ok(found) = archive::zip_to_droplet_tar(f.path(), &limits, &mut out) {
        assert!(found.bytes <= limits.max_unpacked_bytes);
        let mut tar = tar::Archive::new(out.as_slice());
        for entry in tar.entries().expect("our own tar reads back") {
            let entry = entry.expect("our own tar entry");
            let path = entry.path().expect("path").into_owned();
            assert!(path.is_relative(), "absolute path {path:?}");
            assert!(!path.components().any(|c| matches!(c, std::path::Component::ParentDir)), "{path:?}");
            let kind = entry.header().entry_type();
            assert!(kind.is_file() || kind.is_dir(), "{kind:?}");
            assert_eq!(entry.header().mode().expect("mode") & 0o7000, 0, "setuid/setgid/sticky bits");
        }
    }
});
