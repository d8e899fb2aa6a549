//! The Open Service Broker API v2.17 as the platform sees a broker: the request and response
//! bodies of its endpoints (field names as the specification spells them) and one trait,
//! [`ServiceBroker`], implemented over HTTP for brokers an operator registers and in process for
//! the built-in ones.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `X-Broker-API-Version` sent with every request.
pub const OSB_API_VERSION: &str = "2.17";

/// `GET /v2/catalog`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Catalog {
    pub services: Vec<CatalogService>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CatalogService {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub bindable: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub plan_updateable: bool,
    #[serde(default)]
    pub instances_retrievable: bool,
    #[serde(default)]
    pub bindings_retrievable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    pub plans: Vec<CatalogPlan>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CatalogPlan {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(default = "default_true")]
    pub free: bool,
    /// A plan may override the service's `bindable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

fn default_true() -> bool {
    true
}

/// Who asks, in the specification's `context` object (`platform` is ours: `paas`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Context {
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
}

/// `PUT /v2/service_instances/:instance_id` (with `accepts_incomplete=true`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProvisionRequest {
    pub service_id: String,
    pub plan_id: String,
    #[serde(default)]
    pub context: Context,
    pub organization_guid: String,
    pub space_guid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// The answer to provision and deprovision: done (`operation: None`, HTTP 200/201), or started
/// (HTTP 202) with an operation to poll with [`ServiceBroker::last_operation`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OperationResponse {
    /// True when the broker answered 202 Accepted.
    #[serde(skip)]
    pub asynchronous: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// `GET /v2/service_instances/:instance_id/last_operation`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastOperation {
    pub state: OperationState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum OperationState {
    #[serde(rename = "in progress")]
    InProgress,
    #[serde(rename = "succeeded")]
    Succeeded,
    #[serde(rename = "failed")]
    Failed,
}

/// `PUT /v2/service_instances/:instance_id/service_bindings/:binding_id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BindRequest {
    pub service_id: String,
    pub plan_id: String,
    #[serde(default)]
    pub context: Context,
    /// `{"app_guid": ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_resource: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// A binding's answer: `credentials` is what the app sees in `VCAP_SERVICES`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BindResponse {
    #[serde(default)]
    pub credentials: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog_drain_url: Option<String>,
}

/// Identifies what an unbind or deprovision is about (query parameters in the specification).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServicePlan {
    pub service_id: String,
    pub plan_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker could not be reached or answered something that is not the API.
    #[error("service broker unreachable: {0}")]
    Unreachable(String),
    /// The broker refused: its HTTP status and its `error`/`description` (OSB error body).
    #[error("service broker refused ({status}): {description}")]
    Refused {
        status: u16,
        error: Option<String>,
        description: String,
    },
    /// The instance or binding is unknown to the broker (410 Gone on delete counts as done).
    #[error("the service broker does not know {0}")]
    Gone(String),
}

/// One service broker. Instance and binding ids are the platform's; the broker keys its state on
/// them, so every call is idempotent as the specification asks.
#[async_trait]
pub trait ServiceBroker: Send + Sync {
    async fn catalog(&self) -> Result<Catalog, BrokerError>;
    async fn provision(
        &self,
        instance_id: &str,
        request: &ProvisionRequest,
    ) -> Result<OperationResponse, BrokerError>;
    async fn last_operation(
        &self,
        instance_id: &str,
        plan: &ServicePlan,
        operation: Option<&str>,
    ) -> Result<LastOperation, BrokerError>;
    async fn deprovision(
        &self,
        instance_id: &str,
        plan: &ServicePlan,
    ) -> Result<OperationResponse, BrokerError>;
    async fn bind(
        &self,
        instance_id: &str,
        binding_id: &str,
        request: &BindRequest,
    ) -> Result<BindResponse, BrokerError>;
    async fn unbind(
        &self,
        instance_id: &str,
        binding_id: &str,
        plan: &ServicePlan,
    ) -> Result<(), BrokerError>;
}
