//! The aifn host.
//!
//! - [`store`]: the state directory (artifacts by digest, numbered versions, model store);
//! - [`function`]: a version loaded for serving, [`instance`]: the threads that serve it;
//! - [`host`]: what is deployed and the control-plane operations;
//! - [`http`]: the server, routing every request to the data plane, the control plane or a probe;
//! - [`keys`], [`metrics`], [`config`].

pub mod autoscale;
pub mod config;
pub mod function;
pub mod host;
pub mod http;
pub mod instance;
pub mod keys;
pub mod metrics;
pub mod policy;
pub mod store;

pub use config::HostConfig;
pub use host::Host;
