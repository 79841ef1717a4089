//! The aifn host. A request goes http → registry → function → pool → guest/model; the control
//! plane sits beside that path and changes what the registry serves.
//!
//! - [`http`]: the server; [`http::data`] serves functions from the [`registry`] alone,
//!   `http/admin.rs` serves the control plane's [`api`];
//! - [`registry`]: what serves traffic now, an immutable snapshot swapped atomically on every
//!   change; [`function`]: a version loaded for serving; [`instance`]: the threads that run its
//!   requests (preprocess → model → postprocess);
//! - [`control`]: deploys, rollbacks, rollouts and pruning, one function at a time;
//!   [`loader`]: makes a stored version ready to serve;
//! - [`records`]: versions, deployments, rollouts and audit events; [`store`]: where they and the
//!   artifacts are kept;
//! - rules, pure and tested on a simulated clock: [`rollout`] (judging a new version) and
//!   [`autoscale`] (pool sizes, with its loop in [`autoscale::scaler`]); [`outcomes`]: what each
//!   version answered;
//! - [`policy`], [`keys`], [`metrics`], [`traces`] (OpenTelemetry), [`webhook`], [`config`];
//!   [`host`] puts them together.

pub mod api;
pub mod autoscale;
pub mod batch_limit;
pub mod config;
pub mod control;
pub mod function;
pub mod host;
pub mod http;
pub mod instance;
pub mod keys;
pub mod labels;
pub mod loader;
pub mod metrics;
pub mod monitor;
pub mod outcomes;
pub mod policy;
pub mod records;
pub mod registry;
pub mod rollout;
pub mod store;
pub mod traces;
pub mod webhook;

pub use config::HostConfig;
pub use host::Host;
