//! The one error shape of the REST API: `{"code": "app_not_found", "message": "..."}`.
//! The server builds it from its error enums in one place; the CLI parses the same type.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// Stable, snake_case, for scripts: see [`ErrorCode`].
    pub code: String,
    /// For humans; never contains internal causes.
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

/// Every code the API can answer with. Codes are part of the interface: add, never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    InvalidName,
    InvalidArchive,
    NotAnApp,
    PayloadTooLarge,
    Unauthorized,
    InvalidCredentials,
    Forbidden,
    AppNotFound,
    NodeNotFound,
    DropletNotFound,
    NotFound,
    Conflict,
    NoNodeAvailable,
    RouteNotFound,
    NoHealthyInstance,
    UpstreamError,
    Internal,
    TooManyRequests,
    SpaceNotFound,
    UserNotFound,
    TokenNotFound,
    InstanceNotFound,
    AppStopped,
    /// The instance did not answer in time (connect or response header timeout).
    UpstreamTimeout,
    /// A route (`HOST[/PATH]`) that does not parse.
    InvalidRoute,
    /// An env var name or value the platform refuses (issue 3).
    InvalidEnv,
    /// No revision of that number, or nothing to roll back to (issue 3).
    RevisionNotFound,
    /// Staging (buildpacks) failed; the STG log lines say why (issue 3).
    StagingFailed,
    /// The app's current revision has no process of that type (issue 3, processes).
    ProcessNotFound,
    /// A list's `limit` outside 1..=1000 or not a number (issue 7, pagination).
    InvalidLimit,
    /// A list's `page_token` that this server did not give out (issue 7, pagination).
    InvalidPageToken,
    /// A streamed push's new instances crashed or did not start in time (issue 7).
    StartFailed,
    /// A log rate limit that does not parse or is out of bounds (issue 6).
    InvalidLogRateLimit,
    /// App names are platform-wide: a push of a name another space holds (issue 18).
    AppNameTaken,
    /// A host (or an app's default route) that belongs to another space (issue 18).
    RouteTaken,
    /// Several spaces the caller reaches have an app of that name and the request names no
    /// space (`X-Paas-Space`, `paas target`) (issue 18).
    AmbiguousApp,
    /// A change that would take a space past its quota (memory, instances, apps or routes)
    /// (issue 26).
    QuotaExceeded,
    /// A route under a private domain another space owns, or a domain that would take hosts
    /// another space serves (issue 22).
    DomainNotOwned,
    /// A certificate that does not parse, whose key does not match, or whose names do not cover
    /// its domain (issue 22).
    InvalidCertificate,
    /// ssh is turned off for the app or its space (issue 21).
    SshDisabled,
    /// No node took up an ssh session in time, or the instance has no running container
    /// (issue 21).
    SshUnavailable,
    /// No task of that id in the app (issue 21).
    TaskNotFound,
    /// The droplet's `release:` process failed: the deploy stopped and the previous revision
    /// keeps serving (issue 21).
    ReleaseFailed,
    /// No service instance of that name in the space (issue 22).
    ServiceNotFound,
    /// A service instance that apps are bound to cannot be deleted (issue 22).
    ServiceBound,
    /// A service broker failed or refused (its description in the message) (issue 22).
    BrokerError,
    /// No offering of that name in the marketplace (issue 22).
    OfferingNotFound,
    /// The offering has no plan of that name (issue 22).
    PlanNotFound,
    /// No service broker of that name (issue 22).
    BrokerNotFound,
    /// The app has no canary or blue-green deployment (issue 23).
    DeploymentNotFound,
    /// A deployment strategy or one of its settings that does not parse (issue 23).
    InvalidStrategy,
    /// A network policy's ports or protocol do not parse, or it names an app twice (issue 25).
    InvalidNetworkPolicy,
    /// Manifest `sidecars:` that are malformed, name a process type the app lacks, or leave
    /// their process no memory (issue 25).
    InvalidSidecar,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidArchive => "invalid_archive",
            ErrorCode::NotAnApp => "not_an_app",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::AppNotFound => "app_not_found",
            ErrorCode::NodeNotFound => "node_not_found",
            ErrorCode::DropletNotFound => "droplet_not_found",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NoNodeAvailable => "no_node_available",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::NoHealthyInstance => "no_healthy_instance",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::Internal => "internal",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::SpaceNotFound => "space_not_found",
            ErrorCode::UserNotFound => "user_not_found",
            ErrorCode::TokenNotFound => "token_not_found",
            ErrorCode::InstanceNotFound => "instance_not_found",
            ErrorCode::AppStopped => "app_stopped",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::InvalidRoute => "invalid_route",
            ErrorCode::InvalidEnv => "invalid_env",
            ErrorCode::RevisionNotFound => "revision_not_found",
            ErrorCode::StagingFailed => "staging_failed",
            ErrorCode::ProcessNotFound => "process_not_found",
            ErrorCode::InvalidLimit => "invalid_limit",
            ErrorCode::InvalidPageToken => "invalid_page_token",
            ErrorCode::StartFailed => "start_failed",
            ErrorCode::InvalidLogRateLimit => "invalid_log_rate_limit",
            ErrorCode::AppNameTaken => "app_name_taken",
            ErrorCode::RouteTaken => "route_taken",
            ErrorCode::AmbiguousApp => "ambiguous_app",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::DomainNotOwned => "domain_not_owned",
            ErrorCode::InvalidCertificate => "invalid_certificate",
            ErrorCode::SshDisabled => "ssh_disabled",
            ErrorCode::SshUnavailable => "ssh_unavailable",
            ErrorCode::TaskNotFound => "task_not_found",
            ErrorCode::ReleaseFailed => "release_failed",
            ErrorCode::ServiceNotFound => "service_not_found",
            ErrorCode::ServiceBound => "service_bound",
            ErrorCode::BrokerError => "broker_error",
            ErrorCode::OfferingNotFound => "offering_not_found",
            ErrorCode::PlanNotFound => "plan_not_found",
            ErrorCode::BrokerNotFound => "broker_not_found",
            ErrorCode::DeploymentNotFound => "deployment_not_found",
            ErrorCode::InvalidStrategy => "invalid_strategy",
            ErrorCode::InvalidNetworkPolicy => "invalid_network_policy",
            ErrorCode::InvalidSidecar => "invalid_sidecar",
        }
    }

    /// The HTTP status that goes with the code; kept here so every server answers alike.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::InvalidName
            | ErrorCode::InvalidArchive
            | ErrorCode::NotAnApp => 400,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Unauthorized | ErrorCode::InvalidCredentials => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::AppNotFound
            | ErrorCode::NodeNotFound
            | ErrorCode::DropletNotFound
            | ErrorCode::NotFound
            | ErrorCode::RouteNotFound
            | ErrorCode::SpaceNotFound
            | ErrorCode::UserNotFound
            | ErrorCode::TokenNotFound => 404,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Conflict => 409,
            ErrorCode::NoNodeAvailable | ErrorCode::NoHealthyInstance => 503,
            ErrorCode::UpstreamError => 502,
            ErrorCode::Internal => 500,
            ErrorCode::InstanceNotFound => 404,
            ErrorCode::AppStopped => 409,
            ErrorCode::UpstreamTimeout => 504,
            ErrorCode::InvalidRoute => 400,
            ErrorCode::InvalidEnv => 400,
            ErrorCode::RevisionNotFound => 404,
            ErrorCode::StagingFailed => 422,
            ErrorCode::ProcessNotFound => 404,
            ErrorCode::InvalidLimit | ErrorCode::InvalidPageToken => 400,
            ErrorCode::StartFailed => 422,
            ErrorCode::InvalidLogRateLimit => 400,
            ErrorCode::AppNameTaken | ErrorCode::RouteTaken | ErrorCode::AmbiguousApp => 409,
            ErrorCode::QuotaExceeded => 422,
            ErrorCode::DomainNotOwned => 409,
            ErrorCode::InvalidCertificate => 400,
            ErrorCode::SshDisabled => 403,
            ErrorCode::SshUnavailable => 503,
            ErrorCode::TaskNotFound => 404,
            ErrorCode::ReleaseFailed => 422,
            ErrorCode::ServiceNotFound
            | ErrorCode::OfferingNotFound
            | ErrorCode::PlanNotFound
            | ErrorCode::BrokerNotFound => 404,
            ErrorCode::ServiceBound => 409,
            ErrorCode::BrokerError => 502,
            ErrorCode::DeploymentNotFound => 404,
            ErrorCode::InvalidStrategy | ErrorCode::InvalidNetworkPolicy => 400,
            ErrorCode::InvalidSidecar => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
