//! Every integration test, as one test binary: the host, wasmtime and ONNX Runtime's bindings link
//! once instead of once per file, which keeps a fresh clone's `target/` (and CI's disk) small.
//! Run one area with `cargo test --release -p aifn --test integration AREA::`.

mod support;

mod autoscale;
mod bad_requests;
mod batching;
mod conformance;
mod crash_consistency;
mod dashboard;
mod end_to_end;
mod fallback;
mod hardening;
mod inspect;
mod k8s;
mod lifecycle;
mod monitoring;
mod observability;
mod pods;
mod policies;
mod sandbox;
mod sentiment_analyzer;
mod spec_errors;
mod templates;
mod text_embedder;
mod traces;
mod transport;
