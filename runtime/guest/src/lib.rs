//! Runs a function's WASM component (the `aifn:function` WIT world in `spec/wit`) in wasmtime.
//!
//! [`GuestEngine`] owns the wasmtime engine and linker, shared by every function. [`GuestEngine::load`]
//! compiles a component once (or reads the compiled artifact cached by digest) into a [`GuestModule`],
//! a pre-linked `InstancePre`. Each request gets a fresh [`GuestCall`]: its own store and instance, with
//! a memory cap and an epoch deadline, so one request never sees another's data and a looping or
//! greedy module is stopped without harming the host.

mod convert;

use aifn_spec::{Capabilities, Isolation};
use aifn_tensor::Tensor;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Rust bindings of the WIT world, generated at build time.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../spec/wit",
        world: "function",
    });
}

use bindings::aifn::function::log;
use bindings::aifn::function::types as wit;
use bindings::{Function, FunctionPre};

/// How often the engine's epoch advances: the granularity of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Longest log line a module may send; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;
/// Room beyond `max_output_bytes` for what comes with the data when a result is copied out of
/// the guest: names, shapes, content types.
const OUTPUT_SLACK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The module refused the request (its `bad-request` error): the caller's fault.
    #[error("{0}")]
    Rejected(String),
    /// The module reported its own failure (its `internal` error).
    #[error("module failed: {0}")]
    Failed(String),
    #[error("module ran past its deadline of {0:?} and was stopped")]
    Timeout(Duration),
    #[error("module exceeded its memory limit of {0} bytes")]
    OutOfMemory(u64),
    #[error("module trapped: {0}")]
    Trap(String),
    #[error("module returned invalid output: {0}")]
    InvalidOutput(String),
    /// The module's answer is over `max_output_bytes` (refused while it was being copied out).
    #[error("module output is over the limit of {0} bytes")]
    OutputTooLarge(usize),
    #[error("module could not be instantiated: {0}")]
    Instantiate(String),
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the module is a core WebAssembly module, not a component: build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)")]
    NotAComponent,
    #[error("the module is not WebAssembly (no `\\0asm` header)")]
    NotWasm,
    #[error("the module does not implement the aifn:function world: {0:#}")]
    WrongWorld(anyhow::Error),
    #[error("compiling the module failed: {0:#}")]
    Compile(anyhow::Error),
    #[error("module.capabilities.read_dirs: cannot open {0}: {1}")]
    ReadDir(String, std::io::Error),
}

/// Limits applied to every call of one module.
/// How a module is loaded: what names it (its artifact's digest, for the compile cache; a tag
/// such as `name@v3` for logs and errors), its limits and what it may reach.
#[derive(Debug, Clone, Default)]
pub struct ModuleConfig {
    pub digest: String,
    pub tag: String,
    pub limits: CallLimits,
    pub capabilities: Capabilities,
    pub isolation: Isolation,
}

#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub timeout: Duration,
    pub memory_bytes: u64,
    /// Upper bound on the size of tensors or a response a module returns. It is also the
    /// component model's "hostcall fuel": wasmtime stops copying a result out of the guest once it
    /// is over, so an oversized answer is refused before the host holds a copy of it.
    pub max_output_bytes: usize,
    /// Bytes of log lines one request may write; later lines are dropped (with one line saying so).
    pub max_log_bytes: usize,
}

impl Default for CallLimits {
    /// The host's defaults: a second per call, 256 MiB of memory, 64 MiB of output, 64 KiB of logs.
    fn default() -> CallLimits {
        CallLimits {
            timeout: Duration::from_secs(1),
            memory_bytes: 256 << 20,
            max_output_bytes: 64 << 20,
            max_log_bytes: 64 << 10,
        }
    }
}

/// Per-call store data: WASI with no capabilities granted, memory limits, and log tags.
struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: CallLimiter,
    tag: Arc<str>,
    /// Log bytes this request may still write.
    log_budget: usize,
    max_log_bytes: usize,
}

/// Caps each linear memory and table, and remembers a refused memory growth so that the trap
/// which usually follows (an allocator aborting) is reported as running out of memory.
struct CallLimiter {
    memory_bytes: usize,
    memory_refused: bool,
}

/// Table entries one instance may have (function pointers of the guest's indirect calls).
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory_bytes;
        self.memory_refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for CallState {}

impl log::Host for CallState {
    fn log(&mut self, level: log::Level, mut message: String) {
        if self.log_budget == 0 {
            return;
        }
        if message.len() >= self.log_budget {
            tracing::warn!(
                target: "aifn::guest",
                function = &*self.tag,
                "the module wrote over {} bytes of logs for one request; the rest is dropped",
                self.max_log_bytes
            );
            self.log_budget = 0;
            return;
        }
        self.log_budget -= message.len();
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let function = &*self.tag;
        match level {
            log::Level::Trace => tracing::trace!(target: "aifn::guest", function, "{message}"),
            log::Level::Debug => tracing::debug!(target: "aifn::guest", function, "{message}"),
            log::Level::Info => tracing::info!(target: "aifn::guest", function, "{message}"),
            log::Level::Warn => tracing::warn!(target: "aifn::guest", function, "{message}"),
            log::Level::Error => tracing::error!(target: "aifn::guest", function, "{message}"),
        }
    }
}

/// The wasmtime engine and linker shared by every function on the host.
pub struct GuestEngine {
    engine: Engine,
    linker: Linker<CallState>,
    cache_dir: Option<PathBuf>,
    ticker_running: Arc<AtomicBool>,
}

impl GuestEngine {
    /// `cache_dir` keeps compiled components by digest so a restart does not recompile.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<GuestEngine> {
        let engine = match Engine::new(&engine_config(true)) {
            Ok(engine) => engine,
            Err(e) => {
                // A machine with little address space cannot reserve the pool; run without it.
                tracing::warn!("pooling allocator unavailable ({e}); instantiating on demand");
                Engine::new(&engine_config(false))
                    .map_err(anyhow::Error::from)
                    .context("creating the wasmtime engine")?
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        Function::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the aifn:function imports")?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Deadlines are counted in epoch ticks; one thread advances the epoch for all stores.
        let ticker_running = Arc::new(AtomicBool::new(true));
        let weak_engine = engine.weak();
        let running = ticker_running.clone();
        std::thread::Builder::new()
            .name("aifn-epoch".into())
            .spawn(move || {
                while running.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("starting the epoch thread")?;
        Ok(GuestEngine {
            engine,
            linker,
            cache_dir,
            ticker_running,
        })
    }

    /// Compiles (or loads from the cache) a component and links it against the host.
    pub fn load(&self, wasm: &[u8], config: &ModuleConfig) -> Result<GuestModule, LoadError> {
        let ModuleConfig {
            digest,
            tag,
            limits,
            capabilities,
            isolation,
        } = config;
        // A granted directory must exist now, not fail every request later.
        for (host, _) in &capabilities.read_dirs {
            if let Err(e) = std::fs::read_dir(host) {
                return Err(LoadError::ReadDir(host.clone(), e));
            }
        }
        match wasm.get(0..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(LoadError::NotAComponent),
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(LoadError::NotWasm),
        }
        let component = self
            .compile_cached(wasm, digest)
            .map_err(|e| LoadError::Compile(e.into()))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(e.into()))?;
        let pre = FunctionPre::new(instance_pre).map_err(|e| LoadError::WrongWorld(e.into()))?;
        Ok(GuestModule {
            engine: self.engine.clone(),
            pre,
            tag: Arc::from(tag.as_str()),
            limits: *limits,
            capabilities: Arc::new(capabilities.clone()),
            idle: (*isolation == Isolation::Instance).then(Default::default),
            spares: Default::default(),
        })
    }

    fn compile_cached(&self, wasm: &[u8], digest: &str) -> wasmtime::Result<Component> {
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, wasm);
        };
        // The artifact depends on the engine's settings and version, so they are part of its name.
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let path = dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish()));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an engine with the same
            // compatibility hash, into the host's own state directory.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unreadable compiled module: {e:#}")
                }
            }
        }
        let component = Component::new(&self.engine, wasm)?;
        if let Err(e) = write_atomically(&path, &component.serialize()?) {
            tracing::warn!(path = %path.display(), "could not cache the compiled module: {e}");
        }
        Ok(component)
    }
}

/// Instances are created per request, so their memories come from a pool of reserved slots
/// (instantiation without mmap/munmap); per-function memory caps are enforced by [`CallLimiter`].
fn engine_config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .max_memory_size(4 << 30);
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            // The kernel says which pages a request wrote, and only those are copied back from the
            // module's image: the slot stays mapped, so the next request takes no page faults and
            // the host no `madvise` (whose TLB shootdowns stall every other thread of the process).
            pool.pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(RESIDENT_MEMORY_BYTES)
                .table_keep_resident(1 << 20);
        } else {
            // Without it the first pages are reset with `memset` whether written or not; more than
            // this costs more to clear than the faults it saves (see the call_overhead example).
            pool.linear_memory_keep_resident(64 << 10)
                .table_keep_resident(1 << 16);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Bytes of a memory slot reset in place between requests when the kernel reports written pages
/// (Linux 6.7 and later); the rest of a larger memory is returned to the kernel.
const RESIDENT_MEMORY_BYTES: usize = 16 << 20;

/// Live instances at once across the host: one per busy instance thread, with room to spare.
const POOL_INSTANCES: u32 = 1000;

impl Drop for GuestEngine {
    fn drop(&mut self) {
        self.ticker_running.store(false, Ordering::Relaxed);
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A compiled, linked component, ready to instantiate once per request.
#[derive(Clone)]
pub struct GuestModule {
    engine: Engine,
    pre: FunctionPre<CallState>,
    tag: Arc<str>,
    limits: CallLimits,
    capabilities: Arc<Capabilities>,
    /// Instances between requests, when the spec's `module.isolation` allows reuse.
    idle: Option<Arc<Mutex<Vec<Live>>>>,
    /// Fresh instances, never used, made ahead by idle instance threads ([`GuestModule::prepare_spare`]).
    spares: Arc<Mutex<Vec<Live>>>,
}

/// An instance and its store.
struct Live {
    store: Store<CallState>,
    instance: Function,
    /// Requests it has served.
    served: u32,
    idle_since: std::time::Instant,
}

/// Requests one reused instance serves before it is replaced (bounding what state can pile up).
const MAX_REQUESTS_PER_INSTANCE: u32 = 1000;
/// Instances kept between requests, per module.
const MAX_IDLE_INSTANCES: usize = 64;
/// How long an unused instance is kept.
const MAX_IDLE_TIME: Duration = Duration::from_secs(60);
/// Fresh instances made ahead, per module.
const MAX_SPARES: usize = 4;

/// The HTTP request as the module sees it.
pub struct GuestRequest<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

/// The wall clock modules see: the Unix epoch, always. The host's time is not theirs to read
/// (answers would depend on when they ran). Monotonic time, for measuring durations, is real.
struct StoppedWallClock;

impl wasmtime_wasi::HostWallClock for StoppedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// What `postprocess` answered.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl GuestModule {
    /// An instance for one request: a fresh one, or (when the spec allows reuse) one that finished
    /// an earlier request cleanly.
    pub fn start(&self) -> Result<GuestCall<'_>, GuestError> {
        // Only instances never refused memory go back to the pool (see `Drop`).
        let reused = self
            .idle
            .as_ref()
            .and_then(|idle| idle.lock().unwrap().pop());
        let live = match reused {
            Some(mut live) => {
                live.store.data_mut().log_budget = self.limits.max_log_bytes;
                live
            }
            None => match self.spares.lock().unwrap().pop() {
                Some(spare) => spare,
                None => self.instantiate()?,
            },
        };
        Ok(GuestCall {
            module: self,
            live: Some(live),
            request: None,
            healthy: true,
        })
    }

    /// Makes a fresh instance ahead of the next request, off its path: called by an instance
    /// thread with nothing to do. Such an instance has served nothing, so `isolation: request`
    /// still means a fresh instance per request. A module that fails to start is left to fail
    /// the request that needs it.
    pub fn prepare_spare(&self) {
        if self.idle.is_some() || self.spares.lock().unwrap().len() >= MAX_SPARES {
            return;
        }
        if let Ok(live) = self.instantiate() {
            let mut spares = self.spares.lock().unwrap();
            if spares.len() < MAX_SPARES {
                spares.push(live);
            }
        }
    }

    fn instantiate(&self) -> Result<Live, GuestError> {
        let state = CallState {
            wasi: self.wasi_context()?,
            table: ResourceTable::new(),
            limits: CallLimiter {
                memory_bytes: usize::try_from(self.limits.memory_bytes).unwrap_or(usize::MAX),
                memory_refused: false,
            },
            tag: self.tag.clone(),
            log_budget: self.limits.max_log_bytes,
            max_log_bytes: self.limits.max_log_bytes,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_hostcall_fuel(
            self.limits
                .max_output_bytes
                .saturating_add(OUTPUT_SLACK_BYTES),
        );
        store.epoch_deadline_trap();
        self.arm_deadline(&mut store);
        let instance = match self.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => return Err(self.classify(e, &store, GuestError::Instantiate)),
        };
        Ok(Live {
            store,
            instance,
            served: 0,
            idle_since: std::time::Instant::now(),
        })
    }

    /// WASI as the spec's `module.capabilities` grant it. By default nothing is: no preopened
    /// directory, no environment or arguments, no socket address (WASI's default), and a wall clock
    /// stopped at the Unix epoch.
    fn wasi_context(&self) -> Result<WasiCtx, GuestError> {
        let granted = &*self.capabilities;
        let mut wasi = WasiCtxBuilder::new();
        if !granted.wall_clock {
            wasi.wall_clock(StoppedWallClock);
        }
        for (name, value) in &granted.env {
            wasi.env(name, value);
        }
        for (host, guest) in &granted.read_dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)
                .map_err(|e| GuestError::Instantiate(format!("opening {host}: {e:#}")))?;
        }
        let network = !granted.network.is_empty();
        wasi.allow_tcp(network).allow_udp(network);
        // Name lookup asks the host's resolver, a way out of its own: only `dns: true` grants it
        // (what a name resolves to is still checked against the granted addresses).
        wasi.allow_ip_name_lookup(granted.dns);
        if network {
            let allowed = self.capabilities.clone();
            wasi.socket_addr_check(move |address, used| {
                use wasmtime_wasi::sockets::SocketAddrUse;
                let allowed = match used {
                    // The implicit bind of a connecting socket: any local port.
                    SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
                        address.ip().is_unspecified() && address.port() == 0
                    }
                    SocketAddrUse::TcpConnect
                    | SocketAddrUse::UdpSend
                    | SocketAddrUse::UdpReceive => allowed.network.contains(&address),
                    // Listening for or accepting connections is never granted.
                    SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => false,
                };
                Box::pin(async move { allowed })
            });
        }
        Ok(wasi.build())
    }

    /// Gives the next step (instantiation, preprocess or postprocess) the module's full deadline;
    /// the model's inference in between does not count against it.
    fn arm_deadline(&self, store: &mut Store<CallState>) {
        let ticks = (self.limits.timeout.as_millis() as u64 / EPOCH_TICK.as_millis() as u64).max(1);
        store.set_epoch_deadline(ticks);
    }

    /// Sorts a wasmtime error into a deadline, memory or other trap. The client gets the trap's
    /// reason; the log gets the guest's backtrace too.
    fn classify(
        &self,
        error: wasmtime::Error,
        store: &Store<CallState>,
        other: fn(String) -> GuestError,
    ) -> GuestError {
        let trap = error.downcast_ref::<wasmtime::Trap>().copied();
        if trap == Some(wasmtime::Trap::Interrupt) {
            return GuestError::Timeout(self.limits.timeout);
        }
        // wasmtime's hostcall fuel ran out while copying a result out (its error type is private).
        if format!("{error:#}").contains("fuel allocated for hostcalls has been exhausted") {
            return GuestError::OutputTooLarge(self.limits.max_output_bytes);
        }
        tracing::warn!(function = &*self.tag, "module failed: {error:?}");
        if store.data().limits.memory_refused {
            return GuestError::OutOfMemory(self.limits.memory_bytes);
        }
        other(match trap {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        })
    }
}

/// One request's instance of a module. Preprocess and postprocess of a request share it, so a module
/// may carry state from one to the other; unless the spec allows reuse, nothing outlives the request.
pub struct GuestCall<'m> {
    module: &'m GuestModule,
    /// Always `Some` until dropped.
    live: Option<Live>,
    request: Option<wit::Request>,
    /// False after a trap, a deadline or running out of memory: such an instance is never reused.
    healthy: bool,
}

impl Drop for GuestCall<'_> {
    fn drop(&mut self) {
        let (Some(idle), Some(mut live)) = (&self.module.idle, self.live.take()) else {
            return;
        };
        live.served += 1;
        // An instance refused memory may be left half-done even if it answered with an error.
        let fit = self.healthy && !live.store.data().limits.memory_refused;
        if fit && live.served < MAX_REQUESTS_PER_INSTANCE {
            let mut idle = idle.lock().unwrap();
            // Instances idle for long are dropped (the oldest are at the front), so a burst's
            // instances do not hold memory and pool slots for ever.
            idle.retain(|other| other.idle_since.elapsed() < MAX_IDLE_TIME);
            if idle.len() < MAX_IDLE_INSTANCES {
                live.idle_since = std::time::Instant::now();
                idle.push(live);
            }
        }
    }
}

impl GuestCall<'_> {
    /// Runs one export under the module's deadline; a trap marks the instance unfit for reuse.
    fn run<T>(
        &mut self,
        call: impl FnOnce(&Function, &mut Store<CallState>) -> wasmtime::Result<T>,
    ) -> Result<T, GuestError> {
        let module = self.module;
        let live = self
            .live
            .as_mut()
            .expect("an instance until the call is dropped");
        module.arm_deadline(&mut live.store);
        let result = call(&live.instance, &mut live.store)
            .map_err(|e| module.classify(e, &live.store, GuestError::Trap));
        self.healthy &= result.is_ok();
        result
    }

    pub fn preprocess(&mut self, request: GuestRequest<'_>) -> Result<Vec<Tensor>, GuestError> {
        let request = wit::Request {
            route: request.route.to_string(),
            method: request.method.to_string(),
            headers: request.headers,
            body: request.body.to_vec(),
        };
        let result = self.run(|instance, store| instance.call_preprocess(store, &request))?;
        self.request = Some(request);
        let tensors = result.map_err(guest_error)?;
        convert::tensors_from_guest(tensors, self.module.limits.max_output_bytes)
    }

    /// Calls `postprocess`; `Ok(None)` means the module leaves the answer to the host.
    pub fn postprocess(&mut self, outputs: &[Tensor]) -> Result<Option<GuestResponse>, GuestError> {
        let request = self.request.take().ok_or_else(|| {
            GuestError::InvalidOutput("postprocess called before preprocess".into())
        })?;
        let outputs = convert::tensors_to_guest(outputs);
        let result =
            self.run(|instance, store| instance.call_postprocess(store, &request, &outputs))?;
        let response = result.map_err(guest_error)?;
        if let Some(r) = &response {
            if r.body.len() > self.module.limits.max_output_bytes {
                return Err(GuestError::OutputTooLarge(
                    self.module.limits.max_output_bytes,
                ));
            }
            if !(100..=599).contains(&r.status) {
                return Err(GuestError::InvalidOutput(format!(
                    "HTTP status {} is not valid",
                    r.status
                )));
            }
        }
        Ok(response.map(|r| GuestResponse {
            status: r.status,
            content_type: r.content_type,
            body: r.body,
        }))
    }
}

fn guest_error(error: wit::Error) -> GuestError {
    match error.kind {
        wit::ErrorKind::BadRequest => GuestError::Rejected(error.message),
        wit::ErrorKind::Internal => GuestError::Failed(error.message),
    }
}
