//! The aifn host.
//!
//! - [`store`]: the state directory (artifacts by digest; a database of versions, deployments,
//!   rollouts, the audit log and model ids);
//! - [`function`]: a version loaded for serving, [`instance`]: the threads that serve it;
//! - [`host`]: what is deployed and the control-plane operations; [`autoscale`]: pool sizes;
//! - [`rollout`]: the rules that judge a new version, [`lifecycle`]: rollouts on a running host,
//!   [`outcomes`]: what each version answered, [`webhook`]: notifications;
//! - [`http`]: the server, routing every request to the data plane, the control plane or a probe;
//! - [`keys`], [`metrics`], [`config`].

pub mod autoscale;
pub mod config;
pub mod function;
pub mod host;
pub mod http;
pub mod instance;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod outcomes;
pub mod policy;
pub mod rollout;
pub mod store;
pub mod webhook;

pub use config::HostConfig;
pub use host::Host;
