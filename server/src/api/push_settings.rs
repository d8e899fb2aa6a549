//! The push's optional settings beyond instances/memory/command (issue 3): each arrives as one
//! multipart text field and is checked here, with the field named in the error.

use paas_common::api::{HealthCheckSettings, ProcessSettings, PushSettings};
use paas_common::domain::parse_memory_mb;
use paas_common::ErrorCode;
use std::collections::BTreeMap;

use crate::error::{ApiResult, Error};

fn json<T: serde::de::DeserializeOwned>(field: &str, text: &str) -> ApiResult<T> {
    serde_json::from_str(text)
        .map_err(|e| Error::api(ErrorCode::BadRequest, format!("field {field:?}: {e}")))
}

fn flag(field: &str, text: &str) -> ApiResult<bool> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::api(
            ErrorCode::BadRequest,
            format!("field {field:?} must be true or false, not {text:?}"),
        )),
    }
}

/// Parses field `name` into `s`.
pub fn apply_field(s: &mut PushSettings, name: &str, text: &str) -> ApiResult<()> {
    match name {
        "env" => {
            let env: BTreeMap<String, String> = json(name, text)?;
            for (k, v) in &env {
                crate::deploy::revisions::check_env(k, Some(v))?;
            }
            s.env = env;
        }
        "disk_mb" | "disk_quota" => {
            s.disk_mb = Some(
                parse_memory_mb(text)
                    .map_err(|m| Error::api(ErrorCode::BadRequest, format!("{name}: {m}")))?,
            );
        }
        "buildpacks" => {
            let names: Vec<String> = json(name, text)?;
            for n in &names {
                if paas_common::manifest::buildpack_name(n).is_none() {
                    return Err(Error::api(
                        ErrorCode::BadRequest,
                        format!(
                            "unknown buildpack {n:?}: known are {}",
                            paas_common::manifest::BUILTIN_BUILDPACKS.join(", ")
                        ),
                    ));
                }
            }
            s.buildpacks = names;
        }
        "routes" => s.routes = json(name, text)?,
        "services" => s.services = json(name, text)?,
        "health" => {
            let h = json::<HealthCheckSettings>(name, text)?;
            // Refused here, before the upload is staged; applied on top of the app's settings
            // once the app is known.
            crate::deploy::lifecycle::manifest_health(&Default::default(), &h)?;
            s.health = Some(h);
        }
        "placement_labels" => {
            let labels: BTreeMap<String, String> = json(name, text)?;
            crate::deploy::lifecycle::check_labels(&labels)?;
            s.placement_labels = Some(labels);
        }
        "processes" => s.processes = json::<Vec<ProcessSettings>>(name, text)?,
        "log_rate_limit" => {
            // Refused here, before the upload is staged.
            crate::deploy::lifecycle::log_rate_limit(text)?;
            s.log_rate_limit = Some(text.to_string());
        }
        "hostname" => s.hostname = Some(text.to_string()),
        "random_route" => s.random_route = flag(name, text)?,
        "no_route" => s.no_route = flag(name, text)?,
        "stack" => {
            // Refused here, before the upload is staged; stored as the canonical name.
            let stack = paas_common::stack::resolve(text)
                .map_err(|e| Error::api(ErrorCode::BadRequest, format!("stack: {e}")))?;
            s.stack = Some(stack.to_string());
        }
        "no_cache" => s.no_cache = flag(name, text)?,
        "dockerfile" => s.dockerfile = flag(name, text)?,
        "no_start" => s.no_start = flag(name, text)?,
        "sidecars" => {
            let sidecars: Vec<paas_common::api::Sidecar> = json(name, text)?;
            // Refused here, before the upload is staged; checked against the app's process
            // types and memory once the app is known (`deploy::push`).
            paas_common::api::check_sidecars(&sidecars)
                .map_err(|m| Error::api(ErrorCode::InvalidSidecar, m))?;
            s.sidecars = Some(sidecars);
        }
        "strategy" => {
            let strategy: paas_common::deployment::DeployStrategy = json(name, text)?;
            strategy
                .check()
                .map_err(|m| Error::api(ErrorCode::InvalidStrategy, m))?;
            s.strategy = Some(strategy);
        }
        _ => {
            return Err(Error::api(
                ErrorCode::BadRequest,
                format!("unknown form field {name:?}"),
            ))
        }
    }
    Ok(())
}
