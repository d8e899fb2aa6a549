//! Stacks by name (issue 19), as Cloud Foundry's `cflinuxfs3`/`cflinuxfs4`: the Debian release
//! an app stages and runs on. Shared so the CLI, the controller (which refuses an unknown name
//! before anything is staged) and the agent (which builds and runs the images) agree on the names.

/// The stack a push gets when it names none.
pub const DEFAULT: &str = "trixie";

/// The stacks every node provides, newest first.
pub const KNOWN: &[&str] = &["trixie", "bookworm"];

/// Cloud Foundry's stack names map onto the Debian release of the same generation, so a CF
/// manifest's `stack: cflinuxfs4` works as written.
const ALIASES: &[(&str, &str)] = &[("cflinuxfs4", "trixie"), ("cflinuxfs3", "bookworm")];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStack {
    pub given: String,
}

impl std::fmt::Display for UnknownStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown stack {:?}: known stacks are {} (cflinuxfs4 means trixie, cflinuxfs3 bookworm)",
            self.given,
            KNOWN.join(", ")
        )
    }
}

impl std::error::Error for UnknownStack {}

/// The stack `name` means, by its own name or a Cloud Foundry alias (case-insensitive).
pub fn resolve(name: &str) -> Result<&'static str, UnknownStack> {
    let n = name.trim().to_ascii_lowercase();
    if let Some(k) = KNOWN.iter().find(|k| **k == n) {
        return Ok(k);
    }
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == n)
        .map(|(_, k)| *k)
        .ok_or_else(|| UnknownStack {
            given: name.to_string(),
        })
}

/// The image instances of an app on `stack` run: the release's runtime only, no build tools.
pub fn run_image(stack: &str) -> String {
    format!("paas-stack:{stack}")
}

/// The image staging runs in: the run image plus compilers and package managers.
pub fn build_image(stack: &str) -> String {
    format!("paas-stack:{stack}-build")
}

/// The image built-in service containers run (issue 22): the trixie run image plus Debian's
/// `postgresql` and `redis-server`, built on each node like the stacks.
pub const SERVICE_IMAGE: &str = "paas-service:trixie";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_resolve_and_unknown_ones_list_the_known() {
        assert_eq!(resolve("trixie").unwrap(), "trixie");
        assert_eq!(resolve("Bookworm").unwrap(), "bookworm");
        assert_eq!(resolve("cflinuxfs4").unwrap(), "trixie");
        assert_eq!(resolve("cflinuxfs3").unwrap(), "bookworm");
        let e = resolve("windows").unwrap_err().to_string();
        assert!(
            e.contains("\"windows\"") && e.contains("trixie, bookworm"),
            "{e}"
        );
        assert_eq!(run_image("trixie"), "paas-stack:trixie");
        assert_eq!(build_image("trixie"), "paas-stack:trixie-build");
    }
}
