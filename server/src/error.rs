//! The controller's error type and its one mapping to HTTP. Handlers return `ApiResult`; a
//! `Internal` cause is logged here and never sent to the client.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use paas_common::{ApiError, ErrorCode};

use crate::blobstore::BlobError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Api { code: ErrorCode, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, Error>;

/// The deploy layer's refusals keep their stable code; its store failures map like any other.
impl From<crate::deploy::DeployError> for Error {
    fn from(e: crate::deploy::DeployError) -> Self {
        match (e.code(), e) {
            (_, crate::deploy::DeployError::Store(s)) => Error::Store(s),
            (_, crate::deploy::DeployError::Blob(b)) => Error::Blob(b),
            (Some(code), e) => Error::api(code, e.to_string()),
            (None, e) => Error::internal(e),
        }
    }
}

impl Error {
    pub fn api(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Api {
            code,
            message: message.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }

    /// The error as the client sees it (internal causes replaced by a generic message).
    pub fn wire(&self) -> ApiError {
        match self {
            Error::Api { code, message } => ApiError::new(*code, message.clone()),
            Error::Store(StoreError::NotFound(what)) => {
                ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
            }
            Error::Store(StoreError::Conflict(what)) => {
                ApiError::new(ErrorCode::Conflict, what.clone())
            }
            _ => ApiError::new(
                ErrorCode::Internal,
                "internal server error; see the controller log",
            ),
        }
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        let code = match self {
            Error::Api { code, .. } => *code,
            Error::Store(StoreError::NotFound(_)) => ErrorCode::NotFound,
            Error::Store(StoreError::Conflict(_)) => ErrorCode::Conflict,
            _ => ErrorCode::Internal,
        };
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        HttpResponse::build(status).json(self.wire())
    }
}

/// JSON error body for places that build responses by hand (router, extractor failures).
pub fn error_response(code: ErrorCode, message: impl Into<String>) -> HttpResponse {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status).json(ApiError::new(code, message))
}

/// An error with its causes, `: `-joined (many crates' own message omits the why).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
