//! [`HttpBroker`]: a service broker an operator registered, spoken to over HTTP as the Open
//! Service Broker API v2.17 asks: basic auth, `X-Broker-API-Version`, `accepts_incomplete=true`
//! on provision and deprovision (a 202 answer is polled with `last_operation`), 410 Gone on a
//! delete counted as done, and the specification's error body (`error`, `description`) mapped
//! to [`BrokerError::Refused`].

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::time::Duration;

use super::broker::{
    BindRequest, BindResponse, BrokerError, Catalog, LastOperation, OperationResponse,
    ProvisionRequest, ServiceBroker, ServicePlan, OSB_API_VERSION,
};

/// The specification's 60 s: a broker that takes longer should answer 202 and work on.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct HttpBroker {
    base: String,
    username: String,
    password: String,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

impl HttpBroker {
    /// `client` is shared by every broker (one connection pool).
    pub fn new(client: reqwest::Client, url: &str, username: &str, password: &str) -> Self {
        Self {
            base: url.trim_end_matches('/').to_string(),
            username: username.to_string(),
            password: password.to_string(),
            client,
        }
    }

    /// A client suited to brokers: bounded time, no redirects (credentials stay with the URL
    /// the operator gave).
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&(dyn erased::Body + Sync)>,
    ) -> Result<(StatusCode, bytes::Bytes), BrokerError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .client
            .request(method.clone(), &url)
            .basic_auth(&self.username, Some(&self.password))
            .header("X-Broker-API-Version", OSB_API_VERSION)
            .query(query);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_json());
        }
        let res = req
            .send()
            .await
            .map_err(|e| BrokerError::Unreachable(format!("{method} {url}: {e}")))?;
        let status = res.status();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| BrokerError::Unreachable(format!("{method} {url}: {e}")))?;
        Ok((status, bytes))
    }

    fn refused(status: StatusCode, body: &[u8]) -> BrokerError {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let (error, description) = match parsed {
            Some(b) => (b.error, b.description),
            None => (None, None),
        };
        let description = description.unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status.to_string()
            } else {
                text.chars().take(300).collect()
            }
        });
        BrokerError::Refused {
            status: status.as_u16(),
            error,
            description,
        }
    }

    fn parse<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, BrokerError> {
        // An empty body where an object is expected is `{}` (several brokers answer so).
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            body
        };
        serde_json::from_slice(body)
            .map_err(|e| BrokerError::Unreachable(format!("the broker's {what} answer: {e}")))
    }

    fn plan_query(plan: &ServicePlan) -> [(&str, &str); 2] {
        [
            ("service_id", plan.service_id.as_str()),
            ("plan_id", plan.plan_id.as_str()),
        ]
    }

    fn operation(
        what: &str,
        status: StatusCode,
        body: &[u8],
    ) -> Result<OperationResponse, BrokerError> {
        match status.as_u16() {
            200 | 201 => {
                let mut r: OperationResponse = Self::parse(what, body)?;
                r.asynchronous = false;
                r.operation = None;
                Ok(r)
            }
            202 => {
                let mut r: OperationResponse = Self::parse(what, body)?;
                r.asynchronous = true;
                Ok(r)
            }
            _ => Err(Self::refused(status, body)),
        }
    }
}

/// Request bodies as one object-safe type, so `call` takes any of them.
mod erased {
    pub trait Body {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Body for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

#[async_trait]
impl ServiceBroker for HttpBroker {
    async fn catalog(&self) -> Result<Catalog, BrokerError> {
        let (status, body) = self.call(Method::GET, "/v2/catalog", &[], None).await?;
        if !status.is_success() {
            return Err(Self::refused(status, &body));
        }
        Self::parse("catalog", &body)
    }

    async fn provision(
        &self,
        instance_id: &str,
        request: &ProvisionRequest,
    ) -> Result<OperationResponse, BrokerError> {
        let (status, body) = self
            .call(
                Method::PUT,
                &format!("/v2/service_instances/{instance_id}"),
                &[("accepts_incomplete", "true")],
                Some(request),
            )
            .await?;
        Self::operation("provision", status, &body)
    }

    async fn last_operation(
        &self,
        instance_id: &str,
        plan: &ServicePlan,
        operation: Option<&str>,
    ) -> Result<LastOperation, BrokerError> {
        let mut query = Self::plan_query(plan).to_vec();
        if let Some(op) = operation {
            query.push(("operation", op));
        }
        let (status, body) = self
            .call(
                Method::GET,
                &format!("/v2/service_instances/{instance_id}/last_operation"),
                &query,
                None,
            )
            .await?;
        match status.as_u16() {
            200 => Self::parse("last_operation", &body),
            410 => Err(BrokerError::Gone(format!("service instance {instance_id}"))),
            _ => Err(Self::refused(status, &body)),
        }
    }

    async fn deprovision(
        &self,
        instance_id: &str,
        plan: &ServicePlan,
    ) -> Result<OperationResponse, BrokerError> {
        let mut query = Self::plan_query(plan).to_vec();
        query.push(("accepts_incomplete", "true"));
        let (status, body) = self
            .call(
                Method::DELETE,
                &format!("/v2/service_instances/{instance_id}"),
                &query,
                None,
            )
            .await?;
        if status == StatusCode::GONE {
            // Already gone: what a delete wants.
            return Ok(OperationResponse::default());
        }
        Self::operation("deprovision", status, &body)
    }

    async fn bind(
        &self,
        instance_id: &str,
        binding_id: &str,
        request: &BindRequest,
    ) -> Result<BindResponse, BrokerError> {
        let (status, body) = self
            .call(
                Method::PUT,
                &format!("/v2/service_instances/{instance_id}/service_bindings/{binding_id}"),
                &[],
                Some(request),
            )
            .await?;
        match status.as_u16() {
            200 | 201 => Self::parse("bind", &body),
            202 => Err(BrokerError::Refused {
                status: 202,
                error: Some("AsyncRequired".into()),
                description: "the broker bound asynchronously, which the platform does not ask for"
                    .into(),
            }),
            _ => Err(Self::refused(status, &body)),
        }
    }

    async fn unbind(
        &self,
        instance_id: &str,
        binding_id: &str,
        plan: &ServicePlan,
    ) -> Result<(), BrokerError> {
        let (status, body) = self
            .call(
                Method::DELETE,
                &format!("/v2/service_instances/{instance_id}/service_bindings/{binding_id}"),
                &Self::plan_query(plan),
                None,
            )
            .await?;
        match status.as_u16() {
            200 | 202 | 410 => Ok(()),
            _ => Err(Self::refused(status, &body)),
        }
    }
}
