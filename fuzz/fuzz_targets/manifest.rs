//! Fuzzes manifest parsing (`paas_common::manifest::parse`) with arbitrary text: a manifest is
//! user input read by both the CLI and the server, so it must never panic, and whatever it accepts
//! must already be valid (names re-parse, processes unique, error lines inside the text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use paas_common::domain::AppName;
use paas_common::manifest;

fuzz_target!(|data: &[u8]| {
    // Manifests are UTF-8 text files; the CLI refuses anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    match manifest::parse(text) {
        Ok(m) => {
            assert!(!m.applications.is_empty(), "an accepted manifest names at least one app");
            let mut names = std::collections::HashSet::new();
            for app in &m.applications {
                // A name (optional: `paas push NAME` may give it) went through the same check the
                // API applies, and names no other app of the manifest.
                if let Some(name) = &app.name {
                    assert!(AppName::parse(name.as_str()).is_ok(), "{:?}", name.as_str());
                    assert!(names.insert(name.as_str().to_string()), "duplicate app accepted");
                }
                let _ = app.health().to_settings();
                let mut types = std::collections::HashSet::new();
                for p in &app.processes {
                    assert!(!p.process_type.is_empty(), "empty process type accepted");
                    assert!(types.insert(p.process_type.clone()), "duplicate process type accepted");
                    let s = p.to_settings();
                    assert_eq!(s.process_type, p.process_type);
                }
            }
        }
        Err(e) => {
            if let Some(line) = e.line {
                // A line past the end would send the user looking for something that is not there.
                // YAML breaks lines at `\n`, `\r\n` and a lone `\r` (as editors do); count alike.
                let lines = text.replace("\r\n", "\n").replace('\r', "\n").lines().count();
                assert!(line >= 1 && line <= lines.max(1) + 1, "line {line} outside the text");
            }
            let _ = e.to_string();
        }
    }
});
