//! Instances: the threads that run a function version's requests.
//!
//! An instance is one worker thread that owns an ONNX Runtime session and runs, for each request,
//! the WASM preprocessing, the model and the postprocessing. Tokio tasks hand work over through a
//! bounded channel and wait on a oneshot reply, so inference never blocks the async workers, and a
//! full queue is refused at once (backpressure) instead of buffering without end.

use aifn_guest::{GuestError, GuestModule, GuestRequest};
use aifn_model::{ModelError, ModelSession};
use aifn_tensor::{encode_v2_response, Tensor};
use bytes::Bytes;
use crossbeam_channel::{SendError, Sender};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a request asks an instance to do.
pub enum Work {
    /// A request to one of the function's endpoints.
    Endpoint {
        route: String,
        method: String,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// Tensors already decoded from Open Inference Protocol v2 JSON and checked against the model.
    Tensors(Vec<Tensor>),
}

/// The answer, encoded on the instance thread so tokio only writes bytes.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    pub timings: Timings,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    pub queued: Duration,
    pub preprocess: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The caller's tensors do not fit the model (no module in between).
    #[error("{0}")]
    BadTensors(String),
    /// The module produced tensors the model rejects: the function's fault, not the caller's.
    #[error("the preprocessing module produced input the model rejects: {0}")]
    ModuleOutput(ModelError),
    #[error(transparent)]
    Model(ModelError),
    #[error("instance panicked: {0}")]
    Panic(String),
}

struct Job {
    work: Work,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Reply, InvokeError>>,
}

/// Identifies a function version in responses and logs.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: Arc<str>,
    pub version: u64,
}

/// The instances of one function version. Dropping it closes the queue; instances finish the jobs
/// already queued and then exit.
///
/// Work goes to the instance that became idle last (a stack, not a queue of idle instances): at
/// low load the same instance serves request after request with its model's weights still in the
/// CPU caches, which for a 23 MB transformer is worth ~2 ms per request over round-robin. When
/// every instance is busy, jobs wait in a bounded FIFO queue.
pub struct InstancePool {
    dispatch: Arc<Dispatch>,
    replicas: usize,
    queue_capacity: usize,
}

struct Dispatch {
    state: Mutex<DispatchState>,
}

struct DispatchState {
    /// Jobs waiting for an instance, oldest first.
    queue: VecDeque<Job>,
    /// Idle instances, the most recently idle last; each waits on its own hand-off channel.
    idle: Vec<Sender<Job>>,
    capacity: usize,
    closed: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("all {replicas} instances are busy and the queue of {queue_capacity} requests is full")]
pub struct Overloaded {
    pub replicas: usize,
    pub queue_capacity: usize,
}

impl Dispatch {
    /// The next job for an instance that has just finished one: a queued job, or `None` after
    /// the instance has been put on the idle stack with `handoff` (or the pool has closed).
    fn next_or_idle(&self, handoff: &Sender<Job>) -> NextJob {
        let mut state = self.state.lock().expect("dispatch lock");
        if let Some(job) = state.queue.pop_front() {
            return NextJob::Run(job);
        }
        if state.closed {
            return NextJob::Stop;
        }
        state.idle.push(handoff.clone());
        NextJob::Wait
    }
}

enum NextJob {
    Run(Job),
    Wait,
    Stop,
}

impl InstancePool {
    /// Starts one instance thread per session.
    pub fn start(
        identity: Identity,
        sessions: Vec<ModelSession>,
        module: Option<GuestModule>,
        queue_capacity: usize,
    ) -> InstancePool {
        let replicas = sessions.len();
        let dispatch = Arc::new(Dispatch {
            state: Mutex::new(DispatchState {
                queue: VecDeque::with_capacity(queue_capacity),
                idle: Vec::with_capacity(replicas),
                capacity: queue_capacity,
                closed: false,
            }),
        });
        for (index, session) in sessions.into_iter().enumerate() {
            let dispatch = dispatch.clone();
            let mut instance = Instance {
                identity: identity.clone(),
                session,
                module: module.clone(),
            };
            std::thread::Builder::new()
                .name(format!("{}-v{}-{index}", identity.name, identity.version))
                .spawn(move || {
                    // At most one job is ever in flight to an idle instance.
                    let (handoff, jobs) = crossbeam_channel::bounded::<Job>(1);
                    loop {
                        let job = match dispatch.next_or_idle(&handoff) {
                            NextJob::Run(job) => job,
                            NextJob::Stop => break,
                            NextJob::Wait => match jobs.recv() {
                                Ok(job) => job,
                                Err(_) => break,
                            },
                        };
                        instance.serve(job);
                    }
                    tracing::debug!(function = %instance.identity.name, version = instance.identity.version, "instance stopped");
                })
                .expect("spawning an instance thread");
        }
        InstancePool {
            dispatch,
            replicas,
            queue_capacity,
        }
    }

    pub fn queue_depth(&self) -> usize {
        self.dispatch
            .state
            .lock()
            .expect("dispatch lock")
            .queue
            .len()
    }

    /// Hands work to an idle instance, queues it, or refuses at once when the queue is full.
    pub fn submit(
        &self,
        work: Work,
    ) -> Result<oneshot::Receiver<Result<Reply, InvokeError>>, Overloaded> {
        let (reply, receiver) = oneshot::channel();
        let job = Job {
            work,
            enqueued: Instant::now(),
            reply,
        };
        let mut state = self.dispatch.state.lock().expect("dispatch lock");
        if let Some(instance) = state.idle.pop() {
            drop(state);
            // An idle instance waits on its channel until it gets this job or the pool closes.
            if let Err(SendError(job)) = instance.send(job) {
                let state = self.dispatch.state.lock().expect("dispatch lock");
                return self.queue_or_refuse(job, state).map(|()| receiver);
            }
            return Ok(receiver);
        }
        self.queue_or_refuse(job, state).map(|()| receiver)
    }

    fn queue_or_refuse(
        &self,
        job: Job,
        mut state: std::sync::MutexGuard<'_, DispatchState>,
    ) -> Result<(), Overloaded> {
        if state.closed || state.queue.len() >= state.capacity {
            return Err(Overloaded {
                replicas: self.replicas,
                queue_capacity: self.queue_capacity,
            });
        }
        state.queue.push_back(job);
        Ok(())
    }
}

impl Drop for InstancePool {
    fn drop(&mut self) {
        let mut state = self.dispatch.state.lock().expect("dispatch lock");
        state.closed = true;
        // Idle instances see their channel close and exit; busy ones drain the queue first.
        state.idle.clear();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

struct Instance {
    identity: Identity,
    session: ModelSession,
    module: Option<GuestModule>,
}

impl Instance {
    /// Runs one job and sends its reply, unless the caller gave up while it was queued.
    fn serve(&mut self, job: Job) {
        if job.reply.is_closed() {
            return;
        }
        let queued = job.enqueued.elapsed();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.run(job.work)))
            .unwrap_or_else(|panic| Err(InvokeError::Panic(panic_message(&panic))))
            .map(|mut reply| {
                reply.timings.queued = queued;
                reply
            });
        let _ = job.reply.send(result);
    }

    fn run(&mut self, work: Work) -> Result<Reply, InvokeError> {
        let mut timings = Timings::default();
        match (work, &self.module) {
            (
                Work::Endpoint {
                    route,
                    method,
                    headers,
                    body,
                },
                Some(module),
            ) => {
                let started = Instant::now();
                let mut call = module.start()?;
                let inputs = call.preprocess(GuestRequest {
                    route: &route,
                    method: &method,
                    headers,
                    body: &body,
                })?;
                timings.preprocess = started.elapsed();

                let started = Instant::now();
                let outputs = self.session.run(inputs).map_err(|e| match e {
                    ModelError::BadInput(_) => InvokeError::ModuleOutput(e),
                    other => InvokeError::Model(other),
                })?;
                timings.inference = started.elapsed();

                let started = Instant::now();
                let reply = match call.postprocess(&outputs)? {
                    Some(response) => Reply {
                        status: response.status,
                        content_type: response.content_type,
                        body: Bytes::from(response.body),
                        timings,
                    },
                    None => self.v2_reply(&outputs, timings),
                };
                Ok(Reply {
                    timings: Timings {
                        postprocess: started.elapsed(),
                        ..reply.timings
                    },
                    ..reply
                })
            }
            (Work::Endpoint { body, .. }, None) => {
                let inputs = aifn_tensor::decode_v2_request(&body)
                    .map_err(|e| InvokeError::BadTensors(e.to_string()))?;
                self.infer(inputs, timings)
            }
            (Work::Tensors(inputs), _) => self.infer(inputs, timings),
        }
    }

    fn infer(&mut self, inputs: Vec<Tensor>, mut timings: Timings) -> Result<Reply, InvokeError> {
        let started = Instant::now();
        let outputs = self.session.run(inputs).map_err(|e| match e {
            ModelError::BadInput(message) => InvokeError::BadTensors(message),
            other => InvokeError::Model(other),
        })?;
        timings.inference = started.elapsed();
        Ok(self.v2_reply(&outputs, timings))
    }

    fn v2_reply(&self, outputs: &[Tensor], timings: Timings) -> Reply {
        let body = encode_v2_response(
            &self.identity.name,
            &self.identity.version.to_string(),
            outputs,
        );
        Reply {
            status: 200,
            content_type: "application/json".into(),
            body: Bytes::from(serde_json::to_vec(&body).expect("JSON values serialise")),
            timings,
        }
    }
}
