//! Backing services (issue 22): the marketplace of service brokers, service instances and their
//! bindings. Every broker, external or built in, is spoken to through [`broker::ServiceBroker`],
//! whose shapes are the Open Service Broker API v2.17's, so the platform treats a broker it ships
//! and one an operator registers the same way.

pub mod broker;
pub mod builtin;
