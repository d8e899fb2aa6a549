//! Names and sizes validated once at the edge, the same way on client and server.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An app name as Cloud Foundry takes it: a display name such as `GetStartedPython` or
/// `My App`, 1 to 100 characters of ASCII letters, digits, spaces and `-_.`, with at least one
/// letter or digit and no space at either end. The app's route host is derived from it by
/// [`route_host_for`], so a name need not be a DNS label itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

/// The longest app name: names travel in URL paths, container labels and log sources.
pub const MAX_APP_NAME: usize = 100;

impl AppName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_chars = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " -_.".contains(c));
        let has_alnum = s.chars().any(|c| c.is_ascii_alphanumeric());
        if s.is_empty()
            || s.len() > MAX_APP_NAME
            || !ok_chars
            || !has_alnum
            || s.trim() != s
            || s.contains("  ")
        {
            return Err(format!(
                "invalid app name {s:?}: use 1 to {MAX_APP_NAME} letters, digits, spaces, '-', '_' and '.', with at least one letter or digit"
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        AppName::parse(&s)
    }
}

impl From<AppName> for String {
    fn from(n: AppName) -> String {
        n.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The route host label Cloud Foundry derives from an app's display name: lowercase, every
/// character a DNS label cannot hold (spaces, `_`, `.`) turned into `-`, runs of `-` made one,
/// no `-` at either end, at most 63 characters. `GetStartedPython` -> `getstartedpython`,
/// `My App_2` -> `my-app-2`. Every name that was valid before display names (a lowercase DNS
/// label) maps to itself, so existing routes keep their host.
pub fn route_host_for(name: &AppName) -> String {
    host_label(name.as_str())
}

/// [`route_host_for`] of any text (empty when it holds no ASCII letter or digit), e.g. a
/// folder's name.
pub fn host_label(text: &str) -> String {
    let mut host = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (host.is_empty() || host.ends_with('-')) {
            continue;
        }
        host.push(c);
    }
    host.truncate(63);
    while host.ends_with('-') {
        host.pop();
    }
    host
}

/// An image reference by name, as a Dockerfile's `FROM` may name a base image (issue 18):
/// `[HOST[:PORT]/]PATH[:TAG]`, lowercase path components, no digest. An id, an id prefix or a
/// digest is refused: the engine resolves a short hex string to any local image whose id starts
/// with it, so only names that an operator allowed may be built on. A name without a tag is
/// `:latest`, as the engine reads it; [`ImageName::as_str`] always has the tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageName(String);

impl ImageName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid image name {s:?}: name an image as REPOSITORY[:TAG] (no id or digest)")
        };
        let s = s.trim();
        if s.is_empty() || s.len() > 255 || s.contains('@') || s.starts_with("sha256:") {
            return Err(bad());
        }
        // A tag follows the last ':' that comes after the last '/' (a registry port does not).
        let last_slash = s.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match s[last_slash..].rfind(':') {
            Some(i) => (&s[..last_slash + i], &s[last_slash + i + 1..]),
            None => (s, "latest"),
        };
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        let mut parts: Vec<&str> = repo.split('/').collect();
        // A first component with a '.' or ':' (or `localhost`) is a registry host.
        if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
            let host = parts.remove(0);
            if !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
                || !host.starts_with(|c: char| c.is_ascii_alphanumeric())
                || host.contains("..")
            {
                return Err(bad());
            }
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if !tag_ok || parts.is_empty() || !parts.iter().all(|c| component_ok(c)) {
            return Err(bad());
        }
        // A lone hex word is what an id prefix looks like: the engine may resolve it to an id.
        if parts.len() == 1 && parts[0].chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Self(format!("{repo}:{tag}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a duration: `300ms`, `1.5s`, `2m`, `1h`, or a plain number of `default_unit_ms`
/// milliseconds. Returns milliseconds (at most about 31 years).
pub fn parse_duration_ms(s: &str, default_unit_ms: f64) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 300ms, 60s or 5m"))?;
    let per = match unit.trim() {
        "" => default_unit_ms,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        u => return Err(format!("unknown unit {u:?} in {s:?}: use ms, s, m or h")),
    };
    let ms = n * per;
    if !ms.is_finite() || !(0.0..=1e12).contains(&ms) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(ms.round() as u64)
}

/// [`parse_duration_ms`] in whole milliseconds as a `u32` (a plain number is milliseconds).
pub fn parse_millis(s: &str) -> Result<u32, String> {
    u32::try_from(parse_duration_ms(s, 1.0)?).map_err(|_| format!("{s:?} is too long"))
}

/// [`parse_duration_ms`] in seconds, rounded up (a plain number is seconds).
pub fn parse_secs(s: &str) -> Result<u32, String> {
    u32::try_from(parse_duration_ms(s, 1000.0)?.div_ceil(1000))
        .map_err(|_| format!("{s:?} is too long"))
}

/// Parses a memory size as Cloud Foundry does: `256M`, `256MB`, `1G`, `1GB`, or a bare number of
/// megabytes. Returns megabytes. Bounds: 16 MB to 64 GB.
pub fn parse_memory_mb(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_uppercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("GB").or_else(|| t.strip_suffix('G')) {
        (n, 1024)
    } else if let Some(n) = t.strip_suffix("MB").or_else(|| t.strip_suffix('M')) {
        (n, 1)
    } else {
        (t.as_str(), 1)
    };
    let n: u64 = num.trim().parse().map_err(|_| {
        format!("invalid memory size {s:?}: use a number with M or G, e.g. 256M or 1G")
    })?;
    let mb = n.saturating_mul(mult);
    if !(16..=65536).contains(&mb) {
        return Err(format!(
            "invalid memory size {s:?}: must be between 16M and 64G"
        ));
    }
    Ok(mb)
}

/// The largest log rate limit an app may ask for (1 GiB/s per instance): far beyond what one
/// instance's collector ships, so only a typo reaches it.
pub const MAX_LOG_RATE_LIMIT: u64 = 1 << 30;

/// Parses a log rate limit as Cloud Foundry's `log-rate-limit-per-second` and `cf scale -l`
/// take it: bytes per second per instance, a number with an optional `B`, `K`/`KB`, `M`/`MB` or
/// `G`/`GB` suffix (powers of 1024, any case). `-1` means the platform's default: `Ok(None)`.
/// 0 is refused rather than read as "no logs", since a developer who types it more likely means
/// "no limit", which is not theirs to set.
pub fn parse_log_rate_limit(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim().to_ascii_uppercase();
    if t == "-1" {
        return Ok(None);
    }
    let t = t.strip_suffix('B').unwrap_or(&t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'M')) => (&t[..i], 1 << 20),
        Some((i, 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let bad = || {
        format!(
            "invalid log rate limit {s:?}: use bytes per second with K, M or G, e.g. 1K or 16M, or -1 for the platform default"
        )
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes == 0 || bytes > MAX_LOG_RATE_LIMIT {
        return Err(format!(
            "invalid log rate limit {s:?}: must be from 1 byte to 1G per second, or -1 for the platform default"
        ));
    }
    Ok(Some(bytes))
}

/// The limit as [`parse_log_rate_limit`] reads it back: `1K`, `16M`, `1500B`.
pub fn format_log_rate_limit(bytes: u64) -> String {
    for (unit, size) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_are_names_never_ids() {
        let ok = |s: &str| ImageName::parse(s).map(|n| n.to_string());
        assert_eq!(ok("alpine").unwrap(), "alpine:latest");
        assert_eq!(ok("paas-stack:bookworm").unwrap(), "paas-stack:bookworm");
        assert_eq!(
            ok("registry.example:5000/team/base:1.2").unwrap(),
            "registry.example:5000/team/base:1.2"
        );
        assert_eq!(ok("library/debian:12").unwrap(), "library/debian:12");
        for bad in [
            "b6",
            "B6",
            "deadbeef",
            "sha256:0123abcd",
            "alpine@sha256:0123",
            "Alpine",
            "$BASE",
            "",
            "a:",
            "a::b",
            "../x",
            "a b",
        ] {
            assert!(ImageName::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn app_names() {
        for ok in [
            "my-app1",
            "GetStartedPython",
            "My App",
            "1app",
            "app-",
            "a_b",
            "a.b",
            &"a".repeat(100),
        ] {
            assert!(AppName::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
        for bad in [
            "",
            " app",
            "app ",
            "a  b",
            "---",
            "a/b",
            "a%20b",
            "a?b",
            "caf\u{e9}",
            "a\tb",
            &"a".repeat(101),
        ] {
            assert!(AppName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn route_hosts_from_display_names() {
        let host = |s: &str| route_host_for(&AppName::parse(s).unwrap());
        assert_eq!(host("GetStartedPython"), "getstartedpython");
        assert_eq!(host("My App_2"), "my-app-2");
        assert_eq!(host("my-app1"), "my-app1");
        assert_eq!(host("-a- -b.-"), "a-b");
        assert_eq!(host("v1.2"), "v1-2");
        assert_eq!(host(&"Ab".repeat(50)).len(), 63);
        assert!(!host(&format!("{}-x", "a".repeat(62))).ends_with('-'));
    }

    #[test]
    fn log_rate_limits() {
        assert_eq!(parse_log_rate_limit("1K"), Ok(Some(1024)));
        assert_eq!(parse_log_rate_limit("16m"), Ok(Some(16 << 20)));
        assert_eq!(parse_log_rate_limit("2KB"), Ok(Some(2048)));
        assert_eq!(parse_log_rate_limit("1G"), Ok(Some(1 << 30)));
        assert_eq!(parse_log_rate_limit("500"), Ok(Some(500)));
        assert_eq!(parse_log_rate_limit("500B"), Ok(Some(500)));
        assert_eq!(parse_log_rate_limit("-1"), Ok(None));
        for bad in [
            "",
            "0",
            "-2",
            "1X",
            "K",
            "2G",
            "1.5M",
            "99999999999999999999K",
        ] {
            assert!(
                parse_log_rate_limit(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        for b in [1024, 16 << 20, 1 << 30, 1500, 1] {
            assert_eq!(parse_log_rate_limit(&format_log_rate_limit(b)), Ok(Some(b)));
        }
        assert_eq!(format_log_rate_limit(1024), "1K");
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_mb("256M"), Ok(256));
        assert_eq!(parse_memory_mb("256mb"), Ok(256));
        assert_eq!(parse_memory_mb("1G"), Ok(1024));
        assert_eq!(parse_memory_mb("512"), Ok(512));
        assert!(parse_memory_mb("lots").is_err());
        assert!(parse_memory_mb("1M").is_err());
        assert!(parse_memory_mb("-5M").is_err());
    }
}
