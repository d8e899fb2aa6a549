//! Names and sizes validated once at the edge, the same way on client and server.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An app name: a DNS label (it becomes `NAME.<apps domain>`), 1 to 63 characters of
/// lowercase letters, digits and `-`, starting with a letter and not ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

impl AppName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_chars = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let starts = s.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if s.is_empty() || s.len() > 63 || !ok_chars || !starts || s.ends_with('-') {
            return Err(format!(
                "invalid app name {s:?}: use 1 to 63 lowercase letters, digits and '-', starting with a letter"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        assert!(AppName::parse("my-app1").is_ok());
        for bad in ["", "My", "1app", "app-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(AppName::parse(bad).is_err(), "{bad:?} should be refused");
        }
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
