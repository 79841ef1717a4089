//! Instances: the threads that run a function version's requests.
//!
//! An instance is one worker thread that owns an ONNX Runtime session and runs, for each request,
//! the WASM preprocessing, the model and the postprocessing. Tokio tasks hand work to an idle
//! instance (or a bounded queue) and wait on a oneshot reply, so inference never blocks the async
//! workers, and a full queue is refused at once (backpressure) instead of buffering without end.

pub use crate::api::PoolLoad;
use crate::autoscale::ScalerWake;
use crate::batch_limit::BatchLimit;
use crate::monitor::{Pending, Tap};
use aifn_guest::{GuestCall, GuestError, GuestModule, GuestRequest};
use aifn_model::{Inputs, ModelError, ModelSession, Signature};
use aifn_tensor::{batch, encode_v2_response, DType, Tensor, V2Request};
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
    /// Tensors already decoded (Open Inference Protocol v2, REST or gRPC) and checked against the
    /// model; the reply carries the output tensors themselves, for the protocol to encode.
    Tensors(Inputs),
}

/// The answer, encoded on the instance thread so tokio only writes bytes.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    /// The output tensors, for [`Work::Tensors`] (then `body` is empty).
    pub tensors: Option<Vec<Tensor>>,
    pub timings: Timings,
    /// Which model answered: `primary`, or `fallback` under peak load.
    pub variant: &'static str,
    /// The model run this request shared with others (a dynamic batch), for its trace.
    pub shared_run: Option<Arc<crate::traces::SharedRun>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    /// Requests in the inference this one was part of (1 without batching).
    pub batch_size: usize,
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
    /// The caller's tensors are over what a request may hold (the host's element limit or the
    /// spec's `v2.max_shape`).
    #[error("{0}")]
    TensorLimit(String),
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
    /// The submitting request's span, when it is traced.
    trace: Option<opentelemetry::trace::SpanContext>,
}

/// Identifies a function version in responses and logs.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: Arc<str>,
    pub version: u64,
    /// `primary`, or `fallback` for the pool of `spec.fallback`'s model.
    pub variant: &'static str,
}

/// The instances of one function version. Dropping it closes the queue; instances finish the jobs
/// already queued and then exit.
///
/// Work goes to the instance that became idle last (a stack, not a queue of idle instances): at
/// low load the same instance serves request after request with its model's weights still in the
/// CPU caches. When every instance is busy, jobs wait in a bounded FIFO queue. The autoscaler
/// changes the number of instances with [`InstancePool::resize`].
pub struct InstancePool {
    dispatch: Arc<Dispatch>,
    spawner: Spawner,
    queue_capacity: usize,
    /// Answered requests' latencies (queue + service), for the autoscaler's p95.
    latencies: Arc<Mutex<VecDeque<(Instant, Duration)>>>,
}

/// Makes a model session for a new instance (loading a model takes milliseconds to seconds, so
/// it is called by the autoscaler, never on a request's path).
pub type SessionFactory = Box<dyn Fn() -> Result<ModelSession, ModelError> + Send + Sync>;

/// What a pool is made of.
pub struct PoolConfig {
    pub identity: Identity,
    /// Instances to start with (at least one).
    pub instances: usize,
    pub module: Option<GuestModule>,
    /// Requests that may wait when every instance is busy.
    pub queue_capacity: usize,
    pub batching: Batching,
    /// Bounds of raw tensors (requests without a module).
    pub tensor_limits: Arc<TensorLimits>,
    /// Woken when a request finds the pool scaled to zero.
    pub scaler: ScalerWake,
    /// How long an instance that finished a job looks for the next before it sleeps.
    pub idle_spin: Duration,
    /// Where answered requests are sampled for `spec.monitoring`.
    pub monitor: Option<Tap>,
}

/// What a new instance is made of.
struct Spawner {
    identity: Identity,
    monitor: Option<Tap>,
    module: Option<GuestModule>,
    batching: Batching,
    tensor_limits: Arc<TensorLimits>,
    new_session: SessionFactory,
    scaler: ScalerWake,
    idle_spin: Duration,
    /// Numbers instance threads for their names.
    started: std::sync::atomic::AtomicUsize,
}

struct Dispatch {
    state: Mutex<DispatchState>,
    /// Signalled when a job is queued, for instances waiting to fill a batch.
    queued: std::sync::Condvar,
}

struct DispatchState {
    /// Jobs waiting for an instance, oldest first.
    queue: VecDeque<Job>,
    /// Idle instances, the most recently idle last; each waits on the receiving end of its channel,
    /// and dropping the sender here stops it.
    idle: Vec<Sender<Job>>,
    capacity: usize,
    closed: bool,
    /// Instance threads alive.
    instances: usize,
    /// Busy instances asked to stop once their job is done (scaling down).
    retiring: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("all {replicas} instances are busy and the queue of {queue_capacity} requests is full")]
pub struct Overloaded {
    pub replicas: usize,
    pub queue_capacity: usize,
}

enum NextJob {
    Run(Job),
    Wait(crossbeam_channel::Receiver<Job>),
    Stop,
}

impl Dispatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, DispatchState> {
        self.state.lock().expect("dispatch lock")
    }

    /// The next job for an instance that has just finished one: a queued job; or, after putting
    /// the instance on the idle stack, a channel to wait on; or stop (pool closed, or retiring).
    fn next_or_idle(&self) -> NextJob {
        let mut state = self.lock();
        if state.retiring > 0 {
            state.retiring -= 1;
            state.instances -= 1;
            return NextJob::Stop;
        }
        if let Some(job) = state.queue.pop_front() {
            return NextJob::Run(job);
        }
        if state.closed {
            state.instances -= 1;
            return NextJob::Stop;
        }
        // A fresh channel per idle spell: when the pool drops the sender, the instance stops.
        let (handoff, jobs) = crossbeam_channel::bounded::<Job>(1);
        state.idle.push(handoff);
        NextJob::Wait(jobs)
    }

    /// Up to `max` jobs that are waiting, oldest first: the rest of a batch. With a `delay`, waits
    /// until `max` are queued or the delay has passed.
    fn take_queued(&self, max: usize, delay: Duration) -> Vec<Job> {
        let mut state = self.lock();
        let deadline = Instant::now() + delay;
        while state.queue.len() < max && !state.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .queued
                .wait_timeout(state, deadline - now)
                .expect("dispatch lock")
                .0;
        }
        let n = max.min(state.queue.len());
        state.queue.drain(..n).collect()
    }
}

impl InstancePool {
    /// Starts `config.instances` instance threads (at least one): the first with `first`, the
    /// others, and any the autoscaler adds later, with sessions from `new_session`.
    pub fn start(
        config: PoolConfig,
        first: ModelSession,
        new_session: SessionFactory,
    ) -> Result<InstancePool, ModelError> {
        let PoolConfig {
            identity,
            instances,
            module,
            queue_capacity,
            batching,
            tensor_limits,
            scaler,
            idle_spin,
            monitor,
        } = config;
        let pool = InstancePool {
            dispatch: Arc::new(Dispatch {
                state: Mutex::new(DispatchState {
                    queue: VecDeque::with_capacity(queue_capacity),
                    idle: Vec::new(),
                    capacity: queue_capacity,
                    closed: false,
                    instances: 0,
                    retiring: 0,
                }),
                queued: Default::default(),
            }),
            spawner: Spawner {
                identity,
                monitor,
                module,
                batching,
                tensor_limits,
                new_session,
                scaler,
                idle_spin,
                started: Default::default(),
            },
            queue_capacity,
            latencies: Default::default(),
        };
        pool.spawn(first);
        pool.resize(instances.max(1))?;
        Ok(pool)
    }

    /// Runs `target` instances: starts new ones (loading their sessions first, so this may take
    /// a while), or stops idle ones at once and busy ones when their job is done.
    pub fn resize(&self, target: usize) -> Result<(), ModelError> {
        let missing = {
            let mut state = self.dispatch.lock();
            let serving = state.instances - state.retiring;
            if target <= serving {
                let mut surplus = serving - target;
                while surplus > 0 && !state.idle.is_empty() {
                    // The instance idle longest goes (the recent ones have warm caches); dropping
                    // its sender wakes it, and it stops.
                    state.idle.remove(0);
                    state.instances -= 1;
                    surplus -= 1;
                }
                state.retiring += surplus;
                return Ok(());
            }
            // Instances about to retire are kept instead of starting new ones.
            let kept = state.retiring.min(target - serving);
            state.retiring -= kept;
            target - serving - kept
        };
        for _ in 0..missing {
            let session = (self.spawner.new_session)()?;
            self.spawn(session);
        }
        Ok(())
    }

    fn spawn(&self, session: ModelSession) {
        let spawner = &self.spawner;
        let index = spawner
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut instance = Instance {
            identity: spawner.identity.clone(),
            monitor: spawner.monitor.clone(),
            session,
            module: spawner.module.clone(),
            batching: spawner.batching,
            tensor_limits: spawner.tensor_limits.clone(),
        };
        let dispatch = self.dispatch.clone();
        let batching = spawner.batching;
        let idle_spin = spawner.idle_spin;
        self.dispatch.lock().instances += 1;
        std::thread::Builder::new()
            .name(format!(
                "{}-v{}-{}{index}",
                spawner.identity.name,
                spawner.identity.version,
                if spawner.identity.variant == "fallback" { "f" } else { "" }
            ))
            .spawn(move || {
                let mut limit = BatchLimit::new(batching.max_size, batching.target_latency);
                loop {
                    let job = match dispatch.next_or_idle() {
                        NextJob::Run(job) => job,
                        NextJob::Stop => break,
                        NextJob::Wait(jobs) => {
                            // Nothing to do: the next request's module instance is made now.
                            if let Some(module) = &instance.module {
                                module.prepare_spare();
                            }
                            match wait_for_job(&jobs, idle_spin) {
                                Ok(job) => job,
                                Err(_) => break, // taken off the idle stack: scaled down or closed
                            }
                        }
                    };
                    // Requests that queued up meanwhile join this one's inference.
                    let mut batch = vec![job];
                    let size = limit.size();
                    if size > 1 {
                        batch.extend(dispatch.take_queued(size - 1, batching.max_delay));
                    }
                    if let Some((requests, took)) = instance.serve(batch) {
                        limit.observe(requests, took);
                    }
                }
                tracing::debug!(function = %instance.identity.name, version = instance.identity.version, "instance stopped");
            })
            .expect("spawning an instance thread");
    }

    /// Instances, running and queued requests now.
    pub fn load(&self) -> PoolLoad {
        let state = self.dispatch.lock();
        let instances = state.instances - state.retiring;
        PoolLoad {
            instances,
            running: state.instances - state.idle.len(),
            queued: state.queue.len(),
        }
    }

    /// Counts one answered request's latency (queue + service, as its caller measured it) in the
    /// window the autoscaler and `aifn status` read.
    pub fn observe(&self, latency: Duration) {
        let mut recent = self.latencies.lock().expect("latency lock");
        if recent.len() >= MAX_LATENCIES {
            recent.pop_front();
        }
        recent.push_back((Instant::now(), latency));
    }

    /// The 95th percentile of the latencies of requests answered in the last `window`.
    pub fn p95(&self, window: Duration) -> Option<Duration> {
        self.percentiles(window, &[0.95]).map(|p| p[0])
    }

    /// Percentiles (`0.5` for the median) of the latencies of requests answered in the last
    /// `window`, or `None` when none were.
    pub fn percentiles(&self, window: Duration, quantiles: &[f64]) -> Option<Vec<Duration>> {
        let mut latencies = self.latencies.lock().expect("latency lock");
        let now = Instant::now();
        while latencies
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > window)
        {
            latencies.pop_front();
        }
        if latencies.is_empty() {
            return None;
        }
        let mut values: Vec<Duration> = latencies.iter().map(|(_, d)| *d).collect();
        drop(latencies);
        values.sort_unstable();
        let last = values.len() - 1;
        Some(
            quantiles
                .iter()
                .map(|q| values[((last as f64) * q).round() as usize])
                .collect(),
        )
    }

    /// Hands work to an idle instance, queues it, or refuses at once when the queue is full.
    /// `trace`: the request's span, which a batched run it joins links to.
    pub fn submit(
        &self,
        work: Work,
        trace: Option<opentelemetry::trace::SpanContext>,
    ) -> Result<oneshot::Receiver<Result<Reply, InvokeError>>, Overloaded> {
        let (reply, receiver) = oneshot::channel();
        let mut job = Job {
            work,
            enqueued: Instant::now(),
            reply,
            trace,
        };
        let mut state = self.dispatch.lock();
        while let Some(instance) = state.idle.pop() {
            // The instance waits on its channel until it gets this job; if it is gone, try another.
            match instance.send(job) {
                Ok(()) => return Ok(receiver),
                Err(SendError(returned)) => job = returned,
            }
        }
        if state.closed || state.queue.len() >= state.capacity {
            return Err(Overloaded {
                replicas: state.instances - state.retiring,
                queue_capacity: self.queue_capacity,
            });
        }
        state.queue.push_back(job);
        let no_instance = state.instances == state.retiring;
        drop(state);
        self.dispatch.queued.notify_one();
        if no_instance {
            // Scaled to zero: the autoscaler starts an instance now rather than at its next tick.
            self.spawner.scaler.wake();
        }
        Ok(receiver)
    }
}

impl Drop for InstancePool {
    fn drop(&mut self) {
        let mut state = self.dispatch.lock();
        state.closed = true;
        // Idle instances see their channel close and exit; busy ones drain the queue first.
        state.idle.clear();
        drop(state);
        self.dispatch.queued.notify_all();
    }
}

/// The next job from an idle instance's channel: looked for until `spin` has passed (yielding the
/// core to any thread that wants it), then waited for asleep. At low load the next request comes
/// within microseconds and finds the instance awake, sparing it the wake-up; a pool left idle
/// sleeps after `spin`. `Err`: the pool dropped the channel (scaled down or closed).
fn wait_for_job(
    jobs: &crossbeam_channel::Receiver<Job>,
    spin: Duration,
) -> Result<Job, crossbeam_channel::RecvError> {
    let until = Instant::now() + spin;
    while Instant::now() < until {
        match jobs.try_recv() {
            Ok(job) => return Ok(job),
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                return Err(crossbeam_channel::RecvError)
            }
            Err(crossbeam_channel::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    jobs.recv()
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Dynamic batching: how many requests an instance may merge into one inference.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// 1 turns batching off.
    pub max_size: usize,
    /// How long an instance with a partial batch waits for more requests.
    pub max_delay: Duration,
    /// Whether inputs that differ beyond the batch dimension are zero-padded to merge.
    pub pad: bool,
    /// Largest merged input in bytes (with padding, the product of the largest dimensions);
    /// requests that would merge to more run one by one.
    pub max_bytes: usize,
    /// The spec's `target_latency`: batches are kept to what fits half of it (`BatchLimit`).
    pub target_latency: Option<Duration>,
}

impl Batching {
    pub const OFF: Batching = Batching {
        max_size: 1,
        max_delay: Duration::ZERO,
        pad: false,
        max_bytes: 0,
        target_latency: None,
    };
}

/// What one request's raw tensors may hold (the v2 route, and endpoints without a module), checked
/// on each input's header before its data is read.
#[derive(Debug, Clone, Default)]
pub struct TensorLimits {
    /// Elements of all inputs of one request together.
    pub max_elements: usize,
    /// Upper bound of each dimension, by position (the spec's `v2.max_shape`); empty: none.
    pub max_shape: Vec<usize>,
}

impl TensorLimits {
    /// Admits one more input of `shape` into a request whose inputs so far hold `elements`.
    fn admit(&self, name: &str, shape: &[usize], elements: &mut usize) -> Result<(), String> {
        if let Some((dim, (&given, &max))) = shape
            .iter()
            .zip(&self.max_shape)
            .enumerate()
            .find(|(_, (given, max))| given > max)
        {
            return Err(format!(
                "input `{name}` has {given} in dimension {dim}, over this function's limit of {max} (v2.max_shape {:?})",
                self.max_shape
            ));
        }
        *elements = aifn_tensor::element_count(shape)
            .and_then(|n| elements.checked_add(n))
            .filter(|&n| n <= self.max_elements)
            .ok_or_else(|| {
                format!(
                    "the request's inputs hold more than the host's limit of {} elements",
                    self.max_elements
                )
            })?;
        Ok(())
    }
}

struct Instance {
    identity: Identity,
    monitor: Option<Tap>,
    session: ModelSession,
    module: Option<GuestModule>,
    batching: Batching,
    tensor_limits: Arc<TensorLimits>,
}

/// Latencies kept for the p95 at most (a few seconds of traffic at high rates).
const MAX_LATENCIES: usize = 20_000;

/// A request after preprocessing: the model inputs, and the module instance that will
/// postprocess its outputs.
struct Prepared<'m> {
    reply: oneshot::Sender<Result<Reply, InvokeError>>,
    call: Option<GuestCall<'m>>,
    inputs: Option<Inputs>,
    timings: Timings,
    /// What the monitor keeps of the request until its outputs are known.
    monitored: Option<Pending>,
    /// The caller wants the output tensors themselves ([`Work::Tensors`]).
    wants_tensors: bool,
    trace: Option<opentelemetry::trace::SpanContext>,
}

impl Instance {
    /// Serves one request, or several in one inference: each is preprocessed in its own module
    /// instance, the model runs once on the merged inputs (or once per request when they cannot
    /// be merged), and each is postprocessed in its own module instance and answered. Returns how
    /// many requests reached the model and how long their inference took.
    fn serve(&mut self, jobs: Vec<Job>) -> Option<(usize, Duration)> {
        let Instance {
            identity,
            monitor,
            session,
            module,
            batching,
            tensor_limits,
        } = self;
        let mut prepared = Vec::with_capacity(jobs.len());
        for job in jobs {
            if job.reply.is_closed() {
                continue; // the caller gave up while the job was queued
            }
            let queued = job.enqueued.elapsed();
            // The body is shared, not copied, with the monitor; the request id joins a label
            // sent later with this answer.
            let (body, request_id) = match (&monitor, &job.work) {
                (Some(tap), Work::Endpoint { body, headers, .. }) => (
                    Some(body.clone()),
                    headers
                        .iter()
                        .find(|(name, _)| name == "x-request-id")
                        .filter(|_| tap.monitor.keeps_predictions())
                        .map(|(_, id)| id.clone()),
                ),
                _ => (None, None),
            };
            let wants_tensors = matches!(job.work, Work::Tensors(_));
            let trace = job.trace;
            let result = guarded(|| {
                prepare(
                    module.as_ref(),
                    session.signature(),
                    tensor_limits,
                    job.work,
                )
            });
            match result {
                Ok((call, inputs, preprocess)) => prepared.push(Prepared {
                    reply: job.reply,
                    call,
                    monitored: monitor.as_ref().and_then(|tap| {
                        tap.monitor
                            .before(body.as_ref(), inputs.tensors(), request_id)
                    }),
                    inputs: Some(inputs),
                    wants_tensors,
                    trace,
                    timings: Timings {
                        queued,
                        preprocess,
                        ..Timings::default()
                    },
                }),
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        if prepared.is_empty() {
            return None;
        }

        let taken = prepared.len();
        let inputs: Vec<Inputs> = prepared
            .iter_mut()
            .map(|p| p.inputs.take().expect("inputs taken once"))
            .collect();
        let started = Instant::now();
        let started_wall = std::time::SystemTime::now();
        // Only what a module produced is the module's fault when the model rejects it.
        let module_ran: Vec<bool> = prepared.iter().map(|p| p.call.is_some()).collect();
        let outputs =
            guarded(|| Ok(infer(session, inputs, &module_ran, batching))).unwrap_or_else(|e| {
                let message = match e {
                    InvokeError::Panic(message) => message,
                    other => other.to_string(),
                };
                (0..taken)
                    .map(|_| (Err(InvokeError::Panic(message.clone())), 1))
                    .collect()
            });
        let inference = started.elapsed();
        // A run that merged traced requests gets a span linked to each of theirs.
        let merged: Vec<_> = prepared
            .iter()
            .zip(&outputs)
            .filter(|(_, (_, batch_size))| *batch_size > 1)
            .filter_map(|(request, _)| request.trace.clone())
            .collect();
        let shared_run = (!merged.is_empty()).then(|| {
            Arc::new(crate::traces::SharedRun::new(
                started_wall,
                inference,
                merged,
            ))
        });

        for (request, (outputs, batch_size)) in prepared.into_iter().zip(outputs) {
            let timings = Timings {
                batch_size,
                inference,
                ..request.timings
            };
            let mut call = request.call;
            if let (Some(tap), Some(pending), Ok(outputs)) = (&monitor, request.monitored, &outputs)
            {
                tap.monitor
                    .record(pending, tap.records_outputs.then_some(outputs.as_slice()));
            }
            let wants_tensors = request.wants_tensors;
            let shared_run = shared_run.as_ref().filter(|_| batch_size > 1).cloned();
            let result = outputs.and_then(|outputs| {
                guarded(|| finish(identity, call.as_mut(), outputs, wants_tensors, timings)).map(
                    |reply| Reply {
                        shared_run,
                        ..reply
                    },
                )
            });
            let _ = request.reply.send(result);
            // The module instance is torn down (its memory reset) after the caller has its answer.
            drop(call);
        }
        Some((taken, inference))
    }
}

/// Runs `f`, turning a panic into an error so one request cannot take the instance down.
fn guarded<T>(f: impl FnOnce() -> Result<T, InvokeError>) -> Result<T, InvokeError> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|panic| Err(InvokeError::Panic(panic_message(&panic))))
}

/// Checks a caller's tensors against the model and `limits`, each input's name, type and shape
/// before its data is converted: every protocol that carries tensors (v2 JSON, its binary data
/// extension, gRPC) decodes through one of these.
pub struct TensorAdmission<'a> {
    signature: &'a Signature,
    limits: &'a TensorLimits,
    elements: usize,
    /// Which refusal it was: a limit (413) or a mismatch with the model (400).
    over_limit: bool,
}

impl<'a> TensorAdmission<'a> {
    pub fn new(signature: &'a Signature, limits: &'a TensorLimits) -> TensorAdmission<'a> {
        TensorAdmission {
            signature,
            limits,
            elements: 0,
            over_limit: false,
        }
    }

    /// Admits one input's head; its error is the refusal's message.
    pub fn admit(&mut self, name: &str, dtype: DType, shape: &[usize]) -> Result<(), String> {
        self.signature.check_input(name, dtype, shape)?;
        self.limits
            .admit(name, shape, &mut self.elements)
            .inspect_err(|_| self.over_limit = true)
    }

    /// The refusal of a decode that failed with `message`.
    pub fn refusal(&self, message: String) -> InvokeError {
        if self.over_limit {
            InvokeError::TensorLimit(message)
        } else {
            InvokeError::BadTensors(message)
        }
    }

    /// The decoded tensors as model inputs, with every input the model needs.
    pub fn finish(self, tensors: Vec<Tensor>) -> Result<Inputs, InvokeError> {
        self.signature
            .check_inputs(tensors)
            .map_err(|e| InvokeError::BadTensors(e.to_string()))
    }
}

/// Open Inference Protocol v2 JSON → the caller's tensors, checked against the model and
/// `limits`.
pub fn v2_inputs(
    signature: &Signature,
    limits: &TensorLimits,
    body: &[u8],
) -> Result<Inputs, InvokeError> {
    v2_request(signature, limits, body, &[]).map(|(inputs, _)| inputs)
}

/// A whole v2 inference request (JSON, and the binary tensor data after it) → the checked model
/// inputs, and what the request asks of the answer (its `inputs` left empty).
pub fn v2_request(
    signature: &Signature,
    limits: &TensorLimits,
    json: &[u8],
    binary: &[u8],
) -> Result<(Inputs, V2Request), InvokeError> {
    let mut admission = TensorAdmission::new(signature, limits);
    let mut request = aifn_tensor::decode_v2_infer(json, binary, |name, dtype, shape| {
        admission.admit(name, dtype, shape)
    })
    .map_err(|e| admission.refusal(e.to_string()))?;
    let inputs = admission.finish(std::mem::take(&mut request.inputs))?;
    Ok((inputs, request))
}

/// Turns a request into checked model inputs: through the module's preprocess, or from v2 JSON.
fn prepare<'m>(
    module: Option<&'m GuestModule>,
    signature: &Signature,
    limits: &TensorLimits,
    work: Work,
) -> Result<(Option<GuestCall<'m>>, Inputs, Duration), InvokeError> {
    let started = Instant::now();
    match (work, module) {
        (
            Work::Endpoint {
                route,
                method,
                headers,
                body,
            },
            Some(module),
        ) => {
            let mut call = module.start()?;
            let inputs = call.preprocess(GuestRequest {
                route: &route,
                method: &method,
                headers,
                body: &body,
            })?;
            let inputs = signature
                .check_inputs(inputs)
                .map_err(InvokeError::ModuleOutput)?;
            Ok((Some(call), inputs, started.elapsed()))
        }
        (Work::Endpoint { body, .. }, None) => {
            Ok((None, v2_inputs(signature, limits, &body)?, Duration::ZERO))
        }
        (Work::Tensors(inputs), _) => Ok((None, inputs, Duration::ZERO)),
    }
}

/// A request's model outputs (or why there are none), and how many requests shared its run.
type RunResult = (Result<Vec<Tensor>, InvokeError>, usize);

/// What requests must share to run together: their inputs' names and shapes beyond dimension 0.
type ShapeKey<'t> = Vec<(&'t str, &'t [usize])>;

/// Runs the model for each request's inputs, and says how many requests shared each run.
/// Requests that can be merged (equal shapes beyond the first dimension, or any shapes with
/// padding) run once together; the others, and the members of a merged run that fails (so that
/// one request cannot fail the others), run one by one.
fn infer(
    session: &mut ModelSession,
    requests: Vec<Inputs>,
    module_ran: &[bool],
    batching: &Batching,
) -> Vec<RunResult> {
    let pad = batching.pad;
    let groups = mergeable_groups(&requests, pad);
    let mut requests: Vec<Option<Inputs>> = requests.into_iter().map(Some).collect();
    let mut results: Vec<Option<RunResult>> = requests.iter().map(|_| None).collect();
    for group in groups {
        if group.len() > 1 {
            let members: Vec<Inputs> = group
                .iter()
                .map(|&i| requests[i].take().expect("each request once"))
                .collect();
            let merged = Inputs::merge(&members, pad, batching.max_bytes)
                .ok()
                .and_then(|(inputs, rows)| {
                    let outputs = session.run(inputs).ok()?;
                    batch::split(&outputs, &rows).ok()
                });
            match merged {
                Some(outputs) => {
                    for (&i, outputs) in group.iter().zip(outputs) {
                        results[i] = Some((Ok(outputs), group.len()));
                    }
                    continue;
                }
                None => group
                    .iter()
                    .zip(members)
                    .for_each(|(&i, inputs)| requests[i] = Some(inputs)),
            }
        }
        for &i in &group {
            let inputs = requests[i].take().expect("each request once");
            let outputs = session.run(inputs).map_err(|e| match e {
                ModelError::BadInput(_) | ModelError::Inference(_) if module_ran[i] => {
                    InvokeError::ModuleOutput(e)
                }
                // The caller's own tensors, checked against the signature, and still refused by
                // the model (an index out of its vocabulary, say): the caller's mistake.
                ModelError::BadInput(message) | ModelError::Inference(message) => {
                    InvokeError::BadTensors(format!(
                        "the model cannot run on these inputs: {message}"
                    ))
                }
                other => InvokeError::Model(other),
            });
            results[i] = Some((outputs, 1));
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every request ran"))
        .collect()
}

/// Indices of the requests that may share a run: all of them with padding, else those whose
/// inputs have the same names and shapes beyond the first dimension.
fn mergeable_groups(requests: &[Inputs], pad: bool) -> Vec<Vec<usize>> {
    if pad {
        return vec![(0..requests.len()).collect()];
    }
    let mut groups: Vec<(ShapeKey, Vec<usize>)> = Vec::new();
    for (i, inputs) in requests.iter().enumerate() {
        let mut key: ShapeKey = inputs
            .tensors()
            .iter()
            .map(|t| (t.name.as_str(), t.shape.get(1..).unwrap_or_default()))
            .collect();
        key.sort_unstable();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// Turns a request's outputs into its reply: the module's postprocess, the tensors themselves
/// (`wants_tensors`), or v2 JSON.
fn finish(
    identity: &Identity,
    call: Option<&mut GuestCall<'_>>,
    outputs: Vec<Tensor>,
    wants_tensors: bool,
    mut timings: Timings,
) -> Result<Reply, InvokeError> {
    if wants_tensors {
        return Ok(Reply {
            status: 200,
            content_type: String::new(),
            body: Bytes::new(),
            tensors: Some(outputs),
            timings,
            variant: identity.variant,
            shared_run: None,
        });
    }
    let started = Instant::now();
    let response = match call {
        Some(call) => call.postprocess(&outputs)?,
        None => None,
    };
    timings.postprocess = started.elapsed();
    Ok(match response {
        Some(response) => Reply {
            status: response.status,
            content_type: response.content_type,
            body: Bytes::from(response.body),
            tensors: None,
            timings,
            variant: identity.variant,
            shared_run: None,
        },
        None => {
            let body = encode_v2_response(&identity.name, &identity.version.to_string(), &outputs);
            Reply {
                status: 200,
                content_type: "application/json".into(),
                body: Bytes::from(serde_json::to_vec(&body).expect("JSON values serialise")),
                tensors: None,
                timings,
                variant: identity.variant,
                shared_run: None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    //! The pipeline's steps against the real parts: ONNX Runtime with the churn predictor's model,
    //! and its WASM module (built by `scripts/setup.sh`).
    use super::*;
    use aifn_guest::{GuestEngine, ModuleConfig};
    use aifn_model::OnnxRuntime;
    use aifn_tensor::TensorData;
    use std::path::PathBuf;
    use std::sync::OnceLock;

    const FEATURES: [f32; 6] = [42.5, 12.0, 1.0, 0.0, 0.0, 1.0];
    const CHURN_BODY: &str = r#"{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}"#;

    fn repo_file(relative: &str) -> PathBuf {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(relative);
        assert!(
            path.exists(),
            "{} is missing: run ./scripts/setup.sh",
            path.display()
        );
        path
    }

    fn session() -> ModelSession {
        static ORT: OnceLock<OnnxRuntime> = OnceLock::new();
        let ort = ORT.get_or_init(|| {
            OnnxRuntime::init(
                &aifn_model::locate_onnxruntime().expect("onnxruntime"),
                None,
            )
            .unwrap()
        });
        let model = std::fs::read(repo_file("functions/churn-predictor/model/churn.onnx")).unwrap();
        ort.load(&model, 1).unwrap()
    }

    fn churn_module(engine: &GuestEngine) -> GuestModule {
        let wasm = std::fs::read(repo_file(
            "functions/churn-predictor/module/target/wasm32-wasip2/release/churn_preprocess.wasm",
        ))
        .unwrap();
        let config = ModuleConfig {
            digest: "churn-unit-test".into(),
            tag: "churn@test".into(),
            ..Default::default()
        };
        engine.load(&wasm, &config).unwrap()
    }

    fn endpoint(body: &str) -> Work {
        Work::Endpoint {
            route: "/v1/churn".into(),
            method: "POST".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body.to_string()),
        }
    }

    fn v2_body(rows: usize, width: usize) -> String {
        let data: Vec<f32> = (0..rows)
            .flat_map(|_| FEATURES.into_iter().cycle().take(width))
            .collect();
        format!(
            r#"{{"inputs":[{{"name":"features","shape":[{rows},{width}],"datatype":"FP32","data":{data:?}}}]}}"#
        )
    }

    fn features(inputs: &Inputs) -> (&[usize], &[f32]) {
        let tensor = &inputs.tensors()[0];
        match &tensor.data {
            TensorData::F32(values) => (&tensor.shape, values),
            other => panic!("features are {other:?}"),
        }
    }

    fn identity() -> Identity {
        Identity {
            name: Arc::from("churn"),
            version: 3,
            variant: "primary",
        }
    }

    const BATCHING: Batching = Batching {
        max_size: 8,
        max_delay: Duration::ZERO,
        pad: false,
        max_bytes: 64 << 20,
        target_latency: None,
    };

    fn limits() -> TensorLimits {
        TensorLimits {
            max_elements: 1 << 20,
            max_shape: Vec::new(),
        }
    }

    #[test]
    fn v2_inputs_are_bounded_before_their_data_is_read() {
        let session = session();
        let signature = session.signature();
        let bounded = TensorLimits {
            max_elements: 30,
            max_shape: vec![4],
        };
        assert!(v2_inputs(signature, &bounded, v2_body(4, 6).as_bytes()).is_ok());
        let refused =
            |limits: &TensorLimits, body: &str| match v2_inputs(signature, limits, body.as_bytes())
            {
                Err(InvokeError::TensorLimit(message)) => message,
                other => panic!("expected a tensor limit, got {other:?}"),
            };
        assert!(refused(&bounded, &v2_body(5, 6)).contains("over this function's limit of 4"));
        let few = TensorLimits {
            max_elements: 11,
            ..limits()
        };
        assert!(refused(&few, &v2_body(2, 6)).contains("limit of 11 elements"));
        // The shape is refused before the (absent) data is looked at.
        let name = &signature.inputs[0].name;
        let huge = format!(
            r#"{{"inputs":[{{"name":"{name}","shape":[4294967296,6],"datatype":"FP32","data":[]}}]}}"#
        );
        assert!(refused(&limits(), &huge).contains("limit of 1048576 elements"));
    }

    #[test]
    fn prepare_decodes_and_checks_v2_json_when_there_is_no_module() {
        let session = session();
        let signature = session.signature();
        let (call, inputs, _) =
            prepare(None, signature, &limits(), endpoint(&v2_body(2, 6))).unwrap();
        assert!(call.is_none());
        assert_eq!(
            features(&inputs),
            (&[2, 6][..], &[FEATURES, FEATURES].concat()[..])
        );
        for (body, says) in [("{", "JSON"), (&*v2_body(1, 5), "shape")] {
            match prepare(None, signature, &limits(), endpoint(body)) {
                Err(InvokeError::BadTensors(message)) => {
                    assert!(message.contains(says), "{message}")
                }
                other => panic!("expected bad tensors, got {:?}", other.map(|r| r.1)),
            }
        }
    }

    #[test]
    fn prepare_runs_the_module_and_checks_what_it_produced() {
        let engine = GuestEngine::new(None).unwrap();
        let module = churn_module(&engine);
        let session = session();
        let (call, inputs, _) = prepare(
            Some(&module),
            session.signature(),
            &limits(),
            endpoint(CHURN_BODY),
        )
        .unwrap();
        assert!(call.is_some());
        assert_eq!(features(&inputs), (&[1, 6][..], &FEATURES[..]));
        // The module's own refusal is the caller's mistake.
        match prepare(
            Some(&module),
            session.signature(),
            &limits(),
            endpoint("not json"),
        ) {
            Err(InvokeError::Guest(GuestError::Rejected(_))) => {}
            other => panic!("expected a rejection, got {:?}", other.map(|r| r.1)),
        };
    }

    #[test]
    fn infer_merges_requests_into_one_run_with_the_answers_of_separate_runs() {
        let mut session = session();
        let inputs = |rows| {
            let tensors = aifn_tensor::decode_v2_request(v2_body(rows, 6).as_bytes()).unwrap();
            session.signature().check_inputs(tensors).unwrap()
        };
        let (one, two) = (inputs(1), inputs(2));
        let alone: Vec<RunResult> = [one.clone(), two.clone()]
            .into_iter()
            .flat_map(|i| infer(&mut session, vec![i], &[false], &BATCHING))
            .collect();
        let together = infer(&mut session, vec![one, two], &[false, false], &BATCHING);
        assert_eq!(together.len(), 2);
        for ((merged, size), (separate, single)) in together.into_iter().zip(alone) {
            assert_eq!((size, single), (2, 1));
            let (merged, separate) = (merged.unwrap(), separate.unwrap());
            assert_eq!(merged.len(), separate.len());
            for (m, s) in merged.iter().zip(&separate) {
                assert_eq!((&m.name, &m.shape), (&s.name, &s.shape));
                match (&m.data, &s.data) {
                    (TensorData::F32(a), TensorData::F32(b)) => {
                        assert!(
                            a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6),
                            "{a:?} {b:?}"
                        )
                    }
                    (a, b) => assert_eq!(a, b),
                }
            }
        }
    }

    #[test]
    fn finish_answers_through_the_module_or_as_v2_json() {
        let engine = GuestEngine::new(None).unwrap();
        let module = churn_module(&engine);
        let mut session = session();
        let (mut call, inputs, _) = prepare(
            Some(&module),
            session.signature(),
            &limits(),
            endpoint(CHURN_BODY),
        )
        .unwrap();
        let (outputs, _) = infer(&mut session, vec![inputs.clone()], &[true], &BATCHING)
            .pop()
            .unwrap();
        let outputs = outputs.unwrap();
        let reply = finish(
            &identity(),
            call.as_mut(),
            outputs.clone(),
            false,
            Timings::default(),
        )
        .unwrap();
        assert_eq!(reply.status, 200);
        let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        let p = answer["churn_probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{answer}");

        // Without a module the outputs go back as Open Inference Protocol v2 JSON.
        let reply = finish(
            &identity(),
            None,
            outputs.clone(),
            false,
            Timings::default(),
        )
        .unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!((reply.status, reply.variant), (200, "primary"));
        assert_eq!(
            (
                answer["model_name"].as_str(),
                answer["model_version"].as_str()
            ),
            (Some("churn"), Some("3"))
        );
        let probabilities = answer["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "probabilities")
            .unwrap();
        let churn = probabilities["data"][1].as_f64().unwrap();
        assert!((churn - p).abs() < 1e-6, "module {p}, v2 {churn}");

        // The v2 routes take the tensors themselves, to encode as their protocol says.
        let reply = finish(&identity(), None, outputs.clone(), true, Timings::default()).unwrap();
        assert_eq!(reply.tensors, Some(outputs));
        assert!(reply.body.is_empty());
    }
}
