//! Backing services (issue 22): the marketplace of service brokers, service instances and their
//! bindings. Every broker, external or built in, is spoken to through [`broker::ServiceBroker`],
//! whose shapes are the Open Service Broker API v2.17's, so the platform treats a broker it ships
//! and one an operator registers the same way. [`Registry`] yields the broker of a name: a
//! built-in one registered at startup ([`Registry::register_builtin`]), else an [`HttpBroker`]
//! over the `service_brokers` row of that name.

pub mod broker;
pub mod builtin;
pub mod http;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

pub use broker::ServiceBroker;
pub use http::HttpBroker;

use crate::secrets::SecretBox;
use crate::store::{broker_aad, BrokerRecord};

/// The brokers the platform can speak to.
#[derive(Default)]
pub struct Registry {
    builtin: RwLock<BTreeMap<String, Arc<dyn ServiceBroker>>>,
    client: OnceLock<reqwest::Client>,
}

impl Registry {
    /// Adds a broker the platform ships (in process, no row, no URL); its catalog is in the
    /// marketplace of every space. Called at startup.
    pub fn register_builtin(&self, name: &str, broker: Arc<dyn ServiceBroker>) {
        if let Ok(mut b) = self.builtin.write() {
            b.insert(name.to_string(), broker);
        }
    }

    /// The built-in brokers, by name.
    pub fn builtins(&self) -> Vec<(String, Arc<dyn ServiceBroker>)> {
        self.builtin
            .read()
            .map(|b| b.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    pub fn builtin(&self, name: &str) -> Option<Arc<dyn ServiceBroker>> {
        self.builtin.read().ok()?.get(name).cloned()
    }

    /// The HTTP broker of a registered row (its password opened here, never stored plain).
    pub fn http(
        &self,
        row: &BrokerRecord,
        secrets: &SecretBox,
    ) -> Result<Arc<dyn ServiceBroker>, crate::secrets::SecretError> {
        let password = secrets.open(&broker_aad(&row.name), &row.password)?;
        Ok(Arc::new(self.http_plain(
            &row.url,
            &row.username,
            &password,
        )))
    }

    /// An HTTP broker from plain credentials (registration, before a row exists).
    pub fn http_plain(&self, url: &str, username: &str, password: &str) -> HttpBroker {
        let client = self.client.get_or_init(HttpBroker::client).clone();
        HttpBroker::new(client, url, username, password)
    }
}
