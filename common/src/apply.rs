//! `paas apply -f platform.yml`: one document describing a space (its apps, their processes,
//! env, routes and bindings, and its service instances), and the plan the controller answers
//! with. The CLI reads the YAML; the REST API (`POST /v1/spaces/{org}/{space}/apply`) takes the
//! same document as JSON (YAML reads JSON too, so both go through [`parse`]).
//!
//! An app entry is a manifest's (`applications:` as in `manifest.yml`, [`AppManifest`]); a
//! service entry is what `paas create-service` sends ([`CreateService`]); a network policy entry
//! what `paas add-network-policy` sends ([`NetworkPolicySpec`]), between two apps of the
//! document's space (a policy into another space needs a developer of that space too, so it is
//! made with `add-network-policy`). What a document does not know is a warning, as in a
//! manifest.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::manifest::{AppManifest, ManifestError};
use crate::network::NetworkPolicySpec;
use crate::service::CreateService;

/// A parsed apply document.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApplyDocument {
    /// `ORG/SPACE`; absent: the CLI's target space.
    #[serde(default)]
    pub space: Option<String>,
    #[serde(default)]
    pub applications: Vec<AppManifest>,
    /// Service instances the space should have: from the marketplace (`offering`, `plan`) or
    /// user-provided (`credentials`). An existing instance of the name is left as it is.
    #[serde(default)]
    pub services: Vec<CreateService>,
    /// Source digest per app name ([`source_digest`] of the app's `path`), filled by the CLI:
    /// an app is pushed again only when its digest differs from the one its droplet was staged
    /// from.
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
    /// Network policies between the space's apps (`source`, `destination`, `ports`,
    /// `protocol`); with prune, the space's policies between its own apps the document does not
    /// list are removed.
    #[serde(default)]
    pub network_policies: Vec<NetworkPolicySpec>,
}

/// A document and the warnings it raised (unknown fields, by path).
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub document: ApplyDocument,
    pub warnings: Vec<String>,
}

/// Parses an apply document (YAML or JSON). Errors carry the line; unknown fields are warnings.
pub fn parse(text: &str) -> Result<Parsed, ManifestError> {
    let (document, warnings): (ApplyDocument, _) =
        crate::manifest::deserialize_with_warnings(text)?;
    crate::manifest::check_applications(text, &document.applications, true)?;
    let mut seen = std::collections::HashSet::new();
    for (i, s) in document.services.iter().enumerate() {
        if s.name.trim().is_empty() {
            return Err(ManifestError {
                line: None,
                message: format!("services[{i}]: name: missing"),
            });
        }
        if !seen.insert(s.name.as_str()) {
            return Err(ManifestError {
                line: None,
                message: format!("service {} is listed twice", s.name),
            });
        }
        if s.offering.is_some() == s.credentials.is_some() {
            return Err(ManifestError {
                line: None,
                message: format!(
                    "services.{}: give either offering (and plan) or credentials (user-provided)",
                    s.name
                ),
            });
        }
    }
    for (i, np) in document.network_policies.iter().enumerate() {
        let at = |m: String| ManifestError {
            line: None,
            message: format!("network_policies[{i}]: {m}"),
        };
        if np.source.trim().is_empty() || np.destination.trim().is_empty() {
            return Err(at("source and destination are app names".into()));
        }
        if let (Some(d), Some(s)) = (&np.destination_space, &document.space) {
            if d != s {
                return Err(at(format!(
                    "destination_space {d}: a document's policies stay in its space; use paas add-network-policy across spaces"
                )));
            }
        }
        crate::network::parse_protocol(&np.protocol).map_err(at)?;
        crate::network::parse_ports(&np.ports).map_err(at)?;
    }
    if let Some(space) = &document.space {
        if space
            .split_once('/')
            .is_none_or(|(o, s)| o.is_empty() || s.is_empty())
        {
            return Err(ManifestError {
                line: None,
                message: format!("space: {space:?} must be ORG/SPACE"),
            });
        }
    }
    Ok(Parsed { document, warnings })
}

/// The document as the JSON the REST API takes, with `sources` set: the text's own mapping
/// (unknown keys kept, so the controller warns about the same ones), `((vars))` and all.
pub fn to_json(
    text: &str,
    sources: BTreeMap<String, String>,
) -> Result<serde_json::Value, ManifestError> {
    let mut value: serde_json::Value = serde_norway::from_str(text).map_err(|e| ManifestError {
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    })?;
    match &mut value {
        serde_json::Value::Object(map) => {
            map.insert("sources".into(), serde_json::json!(sources));
        }
        serde_json::Value::Null => value = serde_json::json!({ "sources": sources }),
        _ => {
            return Err(ManifestError {
                line: None,
                message: "the document is not a mapping".into(),
            })
        }
    }
    Ok(value)
}

/// The digest of an app folder's files as the controller computes it from a push (sorted
/// `(path, sha256, executable)` triples), so the CLI can tell whether a folder differs from
/// what an app runs without uploading it.
pub fn source_digest<'a>(files: impl IntoIterator<Item = (&'a str, &'a str, bool)>) -> String {
    use sha2::{Digest, Sha256};
    let mut tree: Vec<(&str, &str, bool)> = files.into_iter().collect();
    tree.sort();
    let mut h = Sha256::new();
    for (name, sha, exec) in tree {
        h.update(format!("{} {sha} {name}\n", u8::from(exec)));
    }
    hex::encode(h.finalize())
}

/// What one change does, for the `+`/`~`/`-` of a readable plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    CreateService,
    /// A new app: the client pushes its source (the push makes the app with every setting).
    CreateApp,
    /// An app whose source changed: the client pushes it again.
    Push,
    Scale,
    SetMemory,
    SetDisk,
    SetEnv,
    SetHealth,
    ScaleProcess,
    MapRoute,
    UnmapRoute,
    Bind,
    DeleteApp,
    AddPolicy,
    RemovePolicy,
}

impl ChangeKind {
    /// `+` (something new), `~` (changed) or `-` (removed).
    pub fn sign(self) -> char {
        match self {
            ChangeKind::CreateService
            | ChangeKind::CreateApp
            | ChangeKind::MapRoute
            | ChangeKind::Bind
            | ChangeKind::AddPolicy => '+',
            ChangeKind::UnmapRoute | ChangeKind::DeleteApp | ChangeKind::RemovePolicy => '-',
            _ => '~',
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::CreateService => "create service",
            ChangeKind::CreateApp => "create app",
            ChangeKind::Push => "push",
            ChangeKind::Scale => "scale",
            ChangeKind::SetMemory => "set memory",
            ChangeKind::SetDisk => "set disk",
            ChangeKind::SetEnv => "set env",
            ChangeKind::SetHealth => "set health check",
            ChangeKind::ScaleProcess => "scale process",
            ChangeKind::MapRoute => "map route",
            ChangeKind::UnmapRoute => "unmap route",
            ChangeKind::Bind => "bind",
            ChangeKind::DeleteApp => "delete app",
            ChangeKind::AddPolicy => "add network policy",
            ChangeKind::RemovePolicy => "remove network policy",
        }
    }
}

/// One difference between the document and the space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedChange {
    pub kind: ChangeKind,
    /// The app (or service instance) it concerns.
    pub app: Option<String>,
    /// What in it: `web`, an env key, a route, a service instance.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Done by this request. `create_app` and `push` never are: the client pushes those apps'
    /// source through the push route after the plan.
    pub applied: bool,
}

/// The answer of `POST /v1/spaces/{org}/{space}/apply`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApplyPlan {
    /// `ORG/SPACE`.
    pub space: String,
    pub dry_run: bool,
    pub changes: Vec<PlannedChange>,
    /// Apps whose source the client must push (new ones and changed ones), in document order.
    pub push: Vec<String>,
    /// Unknown fields of the document, by path.
    pub warnings: Vec<String>,
}

impl PlannedChange {
    /// One line of a readable plan: `+ create app web`, `~ scale api web: 2 -> 3`.
    pub fn line(&self) -> String {
        let mut s = format!("{} {}", self.kind.sign(), self.kind.as_str());
        if let Some(app) = &self.app {
            s.push(' ');
            s.push_str(app);
        }
        if !self.target.is_empty() {
            s.push(' ');
            s.push_str(&self.target);
        }
        match (&self.before, &self.after) {
            (Some(b), Some(a)) => s.push_str(&format!(": {b} -> {a}")),
            (None, Some(a)) => s.push_str(&format!(": {a}")),
            (Some(b), None) => s.push_str(&format!(" (was {b})")),
            (None, None) => {}
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_with_apps_and_services() {
        let p = parse(
            "space: acme/prod
applications:
- name: web
  path: web
  instances: 2
  env: {GREETING: hi}
  services: [creds]
- name: worker
  processes:
  - type: worker
    instances: 1
services:
- name: creds
  credentials: {user: u}
network_policies:
- {source: web, destination: worker, ports: 8080-8081}
",
        )
        .unwrap();
        assert_eq!(p.document.space.as_deref(), Some("acme/prod"));
        assert_eq!(p.document.applications.len(), 2);
        assert_eq!(p.document.services[0].name, "creds");
        let np = &p.document.network_policies[0];
        assert_eq!(
            (np.protocol.as_str(), np.ports.as_str()),
            ("tcp", "8080-8081")
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let e =
            parse("network_policies:\n- {source: a, destination: b, ports: http}\n").unwrap_err();
        assert!(e.message.contains("network_policies[0]"), "{e}");
    }

    #[test]
    fn bad_documents_name_the_field() {
        let e = parse("applications:\n- name: a\n  memory: 12XB\n").unwrap_err();
        assert!(e.message.contains("memory"), "{e}");
        assert_eq!(e.line, Some(3));
        let e = parse("applications:\n- name: a\n  processes:\n  - instances: 2\n").unwrap_err();
        assert!(e.message.contains("type"), "{e}");
        let e = parse("applications:\n- instances: 2\n").unwrap_err();
        assert!(e.message.contains("name"), "{e}");
        let e = parse("services:\n- name: s\n").unwrap_err();
        assert!(e.message.contains("offering"), "{e}");
        let e = parse("space: nope\n").unwrap_err();
        assert!(e.message.contains("ORG/SPACE"), "{e}");
        // JSON is read the same way.
        let p = parse(r#"{"applications":[{"name":"a","instances":3}]}"#).unwrap();
        assert_eq!(p.document.applications[0].instances, Some(3));
    }

    #[test]
    fn the_json_sent_is_the_document_with_its_sources() {
        let v = to_json(
            "applications:\n- name: a\n  memory: 128M\n",
            [("a".to_string(), "d1".to_string())].into(),
        )
        .unwrap();
        assert_eq!(v["applications"][0]["memory"], "128M");
        assert_eq!(v["sources"]["a"], "d1");
        let p = parse(&v.to_string()).unwrap();
        assert_eq!(p.document.applications[0].memory, Some(128));
        assert_eq!(p.document.sources["a"], "d1");
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn the_source_digest_ignores_order() {
        let a = source_digest([("b", "2", false), ("a", "1", true)]);
        let b = source_digest([("a", "1", true), ("b", "2", false)]);
        assert_eq!(a, b);
        assert_ne!(a, source_digest([("a", "1", false), ("b", "2", false)]));
    }
}
