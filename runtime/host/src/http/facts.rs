//! What the request path notes about one data-plane request for its access-log line and its
//! trace: whom admission let in, which function answered, and when each phase ran. It lives in
//! a task-local for the request's task (see [`scope`]), so that admission and the pool's reply
//! note it without every layer passing it along. Without an access log or tracing there is none,
//! and noting costs a task-local lookup.

use crate::traces::{Phase, RequestTrace};
use opentelemetry::trace::SpanContext;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct RequestFacts {
    caller: OnceLock<String>,
    function: OnceLock<Admitted>,
    pub trace: Option<RequestTrace>,
}

#[derive(Debug)]
pub struct Admitted {
    pub name: String,
    pub target_latency: Option<Duration>,
}

impl RequestFacts {
    pub fn new(trace: Option<RequestTrace>) -> RequestFacts {
        RequestFacts {
            trace,
            ..RequestFacts::default()
        }
    }

    /// `caller`: `key:ID`, `sub:SUBJECT` or `ip:ADDRESS`.
    pub fn admitted(&self, function: Admitted, caller: String) {
        let _ = self.function.set(function);
        let _ = self.caller.set(caller);
    }

    pub fn caller(&self) -> Option<&str> {
        self.caller.get().map(String::as_str)
    }

    pub fn function(&self) -> Option<&Admitted> {
        self.function.get()
    }

    /// Notes a phase in the trace, if the request has one.
    pub fn phase(&self, name: &'static str, start: Instant, end: Instant) -> Option<PhaseNote<'_>> {
        let trace = self.trace.as_ref()?;
        Some(PhaseNote {
            trace,
            phase: Phase {
                name,
                start,
                end,
                attributes: Vec::new(),
                shared_run: None,
            },
        })
    }
}

/// A phase being noted: attributes are added, then `done` keeps it.
pub struct PhaseNote<'t> {
    trace: &'t RequestTrace,
    pub phase: Phase,
}

impl PhaseNote<'_> {
    pub fn attribute(mut self, key: &'static str, value: impl Into<opentelemetry::Value>) -> Self {
        self.phase
            .attributes
            .push(opentelemetry::KeyValue::new(key, value));
        self
    }

    pub fn shared_run(mut self, run: Option<std::sync::Arc<crate::traces::SharedRun>>) -> Self {
        self.phase.shared_run = run;
        self
    }

    pub fn done(self) {
        self.trace.note(self.phase);
    }
}

tokio::task_local! {
    static CURRENT: Option<Arc<RequestFacts>>;
}

/// Runs a request's handling with its facts at hand.
pub fn scope<F: Future>(
    facts: Option<Arc<RequestFacts>>,
    handling: F,
) -> impl Future<Output = F::Output> {
    CURRENT.scope(facts, handling)
}

/// Calls `note` with the current request's facts, if it has any.
pub fn note(note: impl FnOnce(&RequestFacts)) {
    let _ = CURRENT.try_with(|facts| {
        if let Some(facts) = facts {
            note(facts);
        }
    });
}

/// The current request's span, for work it hands to an instance (a batched run links to it).
pub fn span_context() -> Option<SpanContext> {
    CURRENT
        .try_with(|facts| {
            facts
                .as_ref()?
                .trace
                .as_ref()
                .map(RequestTrace::span_context)
        })
        .ok()
        .flatten()
}
