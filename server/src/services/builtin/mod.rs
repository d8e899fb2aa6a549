//! The built-in service broker (issue 22): PostgreSQL and Redis, each service instance a
//! sandboxed container on a node with its data on a named volume (see the agent's `services`
//! module and [`crate::control::services`]).
//!
//! - **Provision** records the instance (`builtin_service_instances`, keyed on the platform's
//!   id, with a generated administrator password sealed by the secret box) and answers 202: the
//!   convergence loop places it with the scheduler, its node starts the container, and
//!   [`ServiceBroker::last_operation`] succeeds once the controller can log in to it over the
//!   port published on the node's address (and, for PostgreSQL, has made the `db` database).
//! - **Bind** makes a PostgreSQL role (member of `paas_users`, which may use `db`; every table
//!   any binding creates is shared with the others) or a Redis ACL user, with its own password;
//!   **unbind** drops it (PostgreSQL: no more logins, its sessions ended, what it owned handed to
//!   `paas_users`), so those credentials are refused from then on.
//! - **Deprovision** takes the instance out of its node's list: the node removes the container,
//!   then its volume, and the row goes once the node no longer reports it.
//!
//! Each service has its own Docker network; a bound app's containers join it (the control plane
//! lists it in their assignments from the app's bindings), so the credentials' `uri`, `hostname`
//! and `port` are the service's alias there (`svc-<id>`, 5432/6379): reachable by bound apps and
//! nothing else on the tenant bridge. `external_*` is the node's address and published port, which
//! the controller uses and clients that are not bound containers on the service's engine may.

pub mod backup;
pub mod http;
mod postgres;
mod redis;

use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::control::services::DEPROVISIONING;
use crate::services::broker::{
    BindRequest, BindResponse, BrokerError, Catalog, CatalogPlan, CatalogService, LastOperation,
    OperationResponse, OperationState, ProvisionRequest, ServiceBroker, ServicePlan,
};
use crate::state::AppCtx;
use crate::store::{BuiltinBindingRecord, BuiltinInstanceRecord, StoreError};

pub const POSTGRESQL: &str = "postgresql";
pub const REDIS: &str = "redis";
const PROVISIONING: &str = "provisioning";
pub(crate) const READY: &str = "ready";
/// The operation names [`ServiceBroker::last_operation`] is asked about.
pub const OP_PROVISION: &str = "provision";
pub const OP_DEPROVISION: &str = "deprovision";

/// One plan of the catalog with what its container reserves.
pub struct PlanDef {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

pub struct ServiceDef {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub tags: &'static [&'static str],
    pub plans: &'static [PlanDef],
}

/// The catalog. Ids are fixed, so a platform that stored them finds them after an upgrade.
pub const SERVICES: &[ServiceDef] = &[
    ServiceDef {
        id: "5b1c6c1e-6a2f-4a57-9d4e-2f0e8f6a0001",
        name: POSTGRESQL,
        description: "PostgreSQL database (Debian's postgresql), one database per instance",
        tags: &["postgresql", "relational", "sql"],
        plans: &[
            PlanDef {
                id: "5b1c6c1e-6a2f-4a57-9d4e-2f0e8f6a0101",
                name: "small",
                description: "256 MB memory, 1 GB disk",
                memory_mb: 256,
                disk_mb: 1024,
            },
            PlanDef {
                id: "5b1c6c1e-6a2f-4a57-9d4e-2f0e8f6a0102",
                name: "medium",
                description: "1 GB memory, 4 GB disk",
                memory_mb: 1024,
                disk_mb: 4096,
            },
        ],
    },
    ServiceDef {
        id: "5b1c6c1e-6a2f-4a57-9d4e-2f0e8f6a0002",
        name: REDIS,
        description: "Redis key-value store (Debian's redis-server), append-only persistence",
        tags: &["redis", "key-value"],
        plans: &[PlanDef {
            id: "5b1c6c1e-6a2f-4a57-9d4e-2f0e8f6a0201",
            name: "small",
            description: "128 MB memory, 512 MB disk",
            memory_mb: 128,
            disk_mb: 512,
        }],
    },
];

/// The service and plan a request names, by id (as the specification says) or by name.
pub fn find_plan(service: &str, plan: &str) -> Option<(&'static ServiceDef, &'static PlanDef)> {
    let s = SERVICES
        .iter()
        .find(|s| s.id == service || s.name == service)?;
    let p = s.plans.iter().find(|p| p.id == plan || p.name == plan)?;
    Some((s, p))
}

fn refused(status: u16, error: Option<&str>, description: impl Into<String>) -> BrokerError {
    BrokerError::Refused {
        status,
        error: error.map(str::to_string),
        description: description.into(),
    }
}

fn internal(e: impl std::fmt::Display) -> BrokerError {
    refused(500, None, e.to_string())
}

impl From<StoreError> for BrokerError {
    fn from(e: StoreError) -> Self {
        internal(e)
    }
}

/// Where the controller reaches a running service container.
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub admin_password: String,
}

/// The name the built-in broker has in the marketplace and `/v1/service-brokers`.
pub const BROKER_NAME: &str = "paas";

/// The built-in broker, in process, registered at startup beside the HTTP brokers; the same
/// broker is also served over OSB HTTP at `/broker/v2` ([`http`]).
pub struct BuiltinBroker {
    ctx: Arc<AppCtx>,
}

impl BuiltinBroker {
    pub fn new(ctx: Arc<AppCtx>) -> Self {
        Self { ctx }
    }

    async fn instance(&self, id: &str) -> Result<BuiltinInstanceRecord, BrokerError> {
        self.ctx
            .store
            .builtin_instance(id)
            .await?
            .ok_or_else(|| BrokerError::Gone(format!("service instance {id}")))
    }

    /// The running container's address, or why it cannot be reached yet.
    pub(crate) async fn endpoint(&self, s: &BuiltinInstanceRecord) -> Result<Endpoint, String> {
        let Some(node) = &s.node_name else {
            return Err(s
                .placement_error
                .clone()
                .unwrap_or_else(|| "waiting for a node".into()));
        };
        let (true, Some(port)) = (s.running, s.host_port) else {
            return Err(match &s.last_exit {
                Some(why) => format!("starting on node {node} (last run: {why})"),
                None => format!("starting on node {node}"),
            });
        };
        let nodes = self
            .ctx
            .store
            .list_nodes()
            .await
            .map_err(|e| e.to_string())?;
        let Some(n) = nodes.iter().find(|n| &n.name == node) else {
            return Err(format!("node {node} is not registered"));
        };
        let admin_password = self
            .ctx
            .secrets
            .open(&s.id, &s.admin_password)
            .map_err(|e| e.to_string())?;
        Ok(Endpoint {
            host: n.address.clone(),
            port,
            admin_password,
        })
    }

    /// Logs in as the administrator and prepares the instance once (PostgreSQL: the `db`
    /// database and the `paas_users` role); then the instance is ready.
    async fn try_ready(&self, s: &BuiltinInstanceRecord) -> Result<(), String> {
        let ep = self.endpoint(s).await?;
        match s.service.as_str() {
            REDIS => redis::ping(&ep).await,
            _ => postgres::prepare(&ep).await,
        }
    }
}

/// A password of letters and digits only, so it needs no quoting anywhere (SQL literals, URIs,
/// Redis ACL rules).
fn password() -> String {
    crate::auth::random_token(32)
}

#[async_trait]
impl ServiceBroker for BuiltinBroker {
    async fn catalog(&self) -> Result<Catalog, BrokerError> {
        Ok(Catalog {
            services: SERVICES
                .iter()
                .map(|s| CatalogService {
                    id: s.id.into(),
                    name: s.name.into(),
                    description: s.description.into(),
                    bindable: true,
                    tags: s.tags.iter().map(|t| t.to_string()).collect(),
                    plan_updateable: false,
                    instances_retrievable: false,
                    bindings_retrievable: false,
                    metadata: None,
                    plans: s
                        .plans
                        .iter()
                        .map(|p| CatalogPlan {
                            id: p.id.into(),
                            name: p.name.into(),
                            description: p.description.into(),
                            free: true,
                            bindable: None,
                            metadata: Some(serde_json::json!({
                                "memory_mb": p.memory_mb, "disk_mb": p.disk_mb,
                            })),
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    async fn provision(
        &self,
        instance_id: &str,
        request: &ProvisionRequest,
    ) -> Result<OperationResponse, BrokerError> {
        let Some((service, plan)) = find_plan(&request.service_id, &request.plan_id) else {
            return Err(refused(
                400,
                Some("BadRequest"),
                format!(
                    "unknown service {:?} or plan {:?}",
                    request.service_id, request.plan_id
                ),
            ));
        };
        let rec = BuiltinInstanceRecord {
            id: instance_id.to_string(),
            service: service.name.into(),
            plan: plan.name.into(),
            memory_mb: plan.memory_mb,
            disk_mb: plan.disk_mb,
            admin_password: self.ctx.secrets.seal(instance_id, &password()),
            state: PROVISIONING.into(),
            node_name: None,
            placement_error: None,
            host_port: None,
            running: false,
            restarts: 0,
            last_exit: None,
        };
        if !self.ctx.store.insert_builtin_instance(&rec).await? {
            // The same request again is the same answer; a different one is a conflict.
            let have = self.instance(instance_id).await?;
            if have.service != rec.service || have.plan != rec.plan {
                return Err(refused(
                    409,
                    None,
                    format!("service instance {instance_id} exists with another plan"),
                ));
            }
            if have.state == READY {
                return Ok(OperationResponse::default());
            }
        } else {
            tracing::info!(service = %instance_id, kind = service.name, plan = plan.name, "provisioning a built-in service");
            self.ctx.converge.notify_one();
        }
        Ok(OperationResponse {
            asynchronous: true,
            dashboard_url: None,
            operation: Some(OP_PROVISION.into()),
        })
    }

    async fn last_operation(
        &self,
        instance_id: &str,
        _plan: &ServicePlan,
        _operation: Option<&str>,
    ) -> Result<LastOperation, BrokerError> {
        let s = self.instance(instance_id).await?;
        let (state, description) = match s.state.as_str() {
            READY => (OperationState::Succeeded, None),
            DEPROVISIONING => (
                OperationState::InProgress,
                Some("removing the container and its data".to_string()),
            ),
            _ => match self.try_ready(&s).await {
                Ok(()) => {
                    self.ctx
                        .store
                        .set_builtin_instance_state(&s.id, READY)
                        .await?;
                    tracing::info!(service = %s.id, kind = %s.service, "built-in service ready");
                    (OperationState::Succeeded, None)
                }
                Err(why) => (OperationState::InProgress, Some(why)),
            },
        };
        Ok(LastOperation { state, description })
    }

    async fn deprovision(
        &self,
        instance_id: &str,
        _plan: &ServicePlan,
    ) -> Result<OperationResponse, BrokerError> {
        let s = self.instance(instance_id).await?;
        if s.node_name.is_none() {
            // Never placed: nothing runs anywhere.
            self.ctx.store.delete_builtin_instance(&s.id).await?;
            return Ok(OperationResponse::default());
        }
        if s.state != DEPROVISIONING {
            self.ctx
                .store
                .set_builtin_instance_state(&s.id, DEPROVISIONING)
                .await?;
            tracing::info!(service = %s.id, "deprovisioning a built-in service");
            self.ctx.bump_assignments();
        }
        Ok(OperationResponse {
            asynchronous: true,
            dashboard_url: None,
            operation: Some(OP_DEPROVISION.into()),
        })
    }

    async fn bind(
        &self,
        instance_id: &str,
        binding_id: &str,
        _request: &BindRequest,
    ) -> Result<BindResponse, BrokerError> {
        let s = self.instance(instance_id).await?;
        if s.state != READY {
            return Err(refused(
                422,
                Some("ConcurrencyError"),
                format!("service instance {instance_id} is {}", s.state),
            ));
        }
        let ep = self.endpoint(&s).await.map_err(|e| refused(503, None, e))?;
        // The row first: a role made and then forgotten could never be dropped.
        let username = format!("b_{}", binding_id.replace('-', "").to_ascii_lowercase());
        let rec = BuiltinBindingRecord {
            id: binding_id.to_string(),
            instance_id: instance_id.to_string(),
            username: username
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(63)
                .collect(),
            password: self.ctx.secrets.seal(instance_id, &password()),
        };
        self.ctx.store.insert_builtin_binding(&rec).await?;
        let rec = self
            .ctx
            .store
            .builtin_binding(binding_id)
            .await?
            .ok_or_else(|| internal("binding vanished"))?;
        if rec.instance_id != instance_id {
            return Err(refused(
                409,
                None,
                format!("binding {binding_id} belongs to another instance"),
            ));
        }
        let pw = self
            .ctx
            .secrets
            .open(instance_id, &rec.password)
            .map_err(internal)?;
        match s.service.as_str() {
            REDIS => redis::add_user(&ep, &rec.username, &pw).await,
            _ => postgres::add_role(&ep, &rec.username, &pw).await,
        }
        .map_err(|e| refused(502, None, e))?;
        Ok(BindResponse {
            credentials: credentials(&s, &ep, &rec.username, &pw),
            syslog_drain_url: None,
        })
    }

    async fn unbind(
        &self,
        instance_id: &str,
        binding_id: &str,
        _plan: &ServicePlan,
    ) -> Result<(), BrokerError> {
        let Some(rec) = self
            .ctx
            .store
            .builtin_binding(binding_id)
            .await?
            .filter(|b| b.instance_id == instance_id)
        else {
            return Err(BrokerError::Gone(format!("service binding {binding_id}")));
        };
        let s = self.instance(instance_id).await?;
        let ep = self.endpoint(&s).await.map_err(|e| refused(503, None, e))?;
        match s.service.as_str() {
            REDIS => redis::remove_user(&ep, &rec.username).await,
            _ => postgres::remove_role(&ep, &rec.username).await,
        }
        .map_err(|e| refused(502, None, e))?;
        self.ctx.store.delete_builtin_binding(binding_id).await?;
        Ok(())
    }
}

/// What a binding's app sees in `VCAP_SERVICES`. The app's own address of the service is its
/// alias on the service's network, which the app's containers join (`Assignment::networks`):
/// `uri`, `hostname`, `port`. `external_*` is the node's published port, for clients that are not
/// bound containers on the service's engine (an operator, the controller, another host).
fn credentials(
    s: &BuiltinInstanceRecord,
    ep: &Endpoint,
    user: &str,
    pw: &str,
) -> BTreeMap<String, Value> {
    let (ext_host, ext_port) = (&ep.host, ep.port);
    let host = format!("svc-{}", s.id);
    let port: u16 = if s.service == REDIS { 6379 } else { 5432 };
    let mut c = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        c.insert(k.to_string(), v);
    };
    put("hostname", host.clone().into());
    put("host", host.clone().into());
    put("port", port.into());
    put("username", user.into());
    put("password", pw.into());
    put("external_hostname", ext_host.clone().into());
    put("external_port", ext_port.into());
    match s.service.as_str() {
        REDIS => {
            put("uri", format!("redis://{user}:{pw}@{host}:{port}").into());
            put(
                "external_uri",
                format!("redis://{user}:{pw}@{ext_host}:{ext_port}").into(),
            );
        }
        _ => {
            let db = postgres::DATABASE;
            put("name", db.into());
            put(
                "uri",
                format!("postgres://{user}:{pw}@{host}:{port}/{db}").into(),
            );
            put(
                "external_uri",
                format!("postgres://{user}:{pw}@{ext_host}:{ext_port}/{db}").into(),
            );
            put(
                "jdbcUrl",
                format!("jdbc:postgresql://{host}:{port}/{db}?user={user}&password={pw}").into(),
            );
        }
    }
    c
}
