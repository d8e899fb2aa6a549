//! Backing services (issue 22): the marketplace of service brokers, service instances (managed by
//! a broker, or user-provided) and app bindings, as the REST API and the CLI exchange them.
//! Credentials never appear here: an app sees them in its `VCAP_SERVICES`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/service-brokers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateBroker {
    pub name: String,
    /// The broker's base URL (`http://` or `https://`); the OSB paths go under it.
    pub url: String,
    pub username: String,
    pub password: String,
    /// Only the target space (`X-Paas-Space`) sees its offerings; default: every space.
    #[serde(default)]
    pub space_scoped: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokerInfo {
    pub name: String,
    /// Empty for a built-in broker.
    pub url: String,
    /// `ORG/SPACE` of a space-scoped broker.
    #[serde(default)]
    pub space: Option<String>,
    /// Whether the platform ships it (no row, no URL).
    #[serde(default)]
    pub builtin: bool,
    /// The offerings of its catalog.
    #[serde(default)]
    pub services: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokerList {
    pub brokers: Vec<BrokerInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanInfo {
    pub name: String,
    pub description: String,
    pub free: bool,
}

/// One offering of the marketplace (a catalog service of one broker).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Offering {
    pub name: String,
    pub description: String,
    pub broker: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub bindable: bool,
    pub plans: Vec<PlanInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Marketplace {
    pub offerings: Vec<Offering>,
}

/// `POST /v1/services`: a managed instance (`offering` and `plan`, optional `parameters` for the
/// broker) or, with `credentials` and no offering, a user-provided one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateService {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub offering: Option<String>,
    #[serde(default)]
    pub plan: Option<String>,
    /// Which broker, when several offer `offering`.
    #[serde(default)]
    pub broker: Option<String>,
    /// Passed to the broker as the provision's `parameters` (`-c JSON`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub parameters: Option<Value>,
    /// A user-provided instance's credentials (`cups -p JSON`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub credentials: Option<Map<String, Value>>,
    #[serde(default)]
    pub syslog_drain_url: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `PATCH /v1/services/{name}`: a user-provided instance's new credentials or drain.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateService {
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub credentials: Option<Map<String, Value>>,
    #[serde(default)]
    pub syslog_drain_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceInfo {
    pub name: String,
    /// `managed` or `user-provided`.
    pub kind: String,
    /// The offering (`user-provided` for those).
    pub offering: String,
    pub plan: String,
    #[serde(default)]
    pub broker: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `create in progress`, `succeeded`, `failed` or `delete in progress`.
    pub state: String,
    /// The broker's word on the last operation.
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub dashboard_url: Option<String>,
    /// `ORG/SPACE`.
    pub space: String,
    /// Apps bound to it.
    #[serde(default)]
    pub bound_apps: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceList {
    pub services: Vec<ServiceInfo>,
}

/// `POST /v1/apps/{name}/bindings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateBinding {
    #[serde(default)]
    pub service: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BindingInfo {
    pub service: String,
    pub app: String,
    pub offering: String,
    pub plan: String,
    pub created_at: DateTime<Utc>,
    /// The app's revision that carries the change (bind or unbind), when one was made.
    #[serde(default)]
    pub revision: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BindingList {
    pub bindings: Vec<BindingInfo>,
}
