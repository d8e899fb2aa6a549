//! Network policies (issue 25): deny by default; a policy lets the source app's instances open
//! connections to the destination app's instances on a protocol and port range. The handler
//! checks that the caller is a developer of both apps' spaces; the nodes enforce it
//! (`control::network`, the agent's `netpolicy`).

use paas_common::network::{parse_ports, parse_protocol};
use paas_common::ErrorCode;

use super::{Actor, DeployError, DeployResult};
use crate::state::AppCtx;
use crate::store::{AppRecord, Event, PolicyRecord, StoreError};

/// A checked policy: protocol and ports parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTarget {
    pub protocol: String,
    pub ports: (u16, u16),
}

/// Parses the protocol and ports of a policy.
pub fn parse(protocol: &str, ports: &str) -> DeployResult<PolicyTarget> {
    let invalid = |m: String| DeployError::invalid(ErrorCode::InvalidNetworkPolicy, m);
    Ok(PolicyTarget {
        protocol: parse_protocol(protocol).map_err(invalid)?,
        ports: parse_ports(ports).map_err(invalid)?,
    })
}

fn describe(src: &AppRecord, dst: &AppRecord, t: &PolicyTarget) -> String {
    let ports = if t.ports.0 == t.ports.1 {
        t.ports.0.to_string()
    } else {
        format!("{}-{}", t.ports.0, t.ports.1)
    };
    format!("{} -> {} {} {ports}", src.name, dst.name, t.protocol)
}

/// Adds a policy (`conflict` when the same one exists); an event on both apps' trails.
pub async fn add(
    ctx: &AppCtx,
    actor: &Actor,
    src: &AppRecord,
    dst: &AppRecord,
    target: &PolicyTarget,
) -> DeployResult<()> {
    let what = describe(src, dst, target);
    let record = PolicyRecord {
        id: uuid::Uuid::new_v4().to_string(),
        source_app_id: src.id.clone(),
        destination_app_id: dst.id.clone(),
        protocol: target.protocol.clone(),
        start_port: target.ports.0,
        end_port: target.ports.1,
        created_by: actor.actor.clone(),
        created_at: chrono::Utc::now(),
    };
    let event = Event {
        app_name: Some(dst.name.clone()),
        app_id: Some(dst.id.clone()),
        actor: actor.actor.clone(),
        kind: "network_policy.add".into(),
        message: format!("added network policy {what}"),
    };
    ctx.store
        .add_policy(&record, &event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => DeployError::invalid(
                ErrorCode::Conflict,
                format!("network policy {what} exists already"),
            ),
            e => e.into(),
        })?;
    tracing::info!(policy = %what, "network policy added");
    crate::control::network::refresh(ctx).await?;
    Ok(())
}

/// Removes a policy (`not_found` when there is none such).
pub async fn remove(
    ctx: &AppCtx,
    actor: &Actor,
    src: &AppRecord,
    dst: &AppRecord,
    target: &PolicyTarget,
) -> DeployResult<()> {
    let what = describe(src, dst, target);
    let event = Event {
        app_name: Some(dst.name.clone()),
        app_id: Some(dst.id.clone()),
        actor: actor.actor.clone(),
        kind: "network_policy.remove".into(),
        message: format!("removed network policy {what}"),
    };
    let gone = ctx
        .store
        .remove_policy(&src.id, &dst.id, &target.protocol, target.ports, &event)
        .await?;
    if !gone {
        return Err(DeployError::invalid(
            ErrorCode::NotFound,
            format!("no network policy {what}"),
        ));
    }
    tracing::info!(policy = %what, "network policy removed");
    crate::control::network::refresh(ctx).await?;
    Ok(())
}
