//! `aifn`: run a host, and deploy and manage functions on it.

mod build;
mod bundle;
mod client;

use aifn_host::host::DeployRequest;
use aifn_host::{Host, HostConfig};
use anyhow::Context as _;
use bundle::{render_spec_errors, Bundle};
use clap::{Args, Parser, Subcommand};
use client::Client;
use serde_json::{json, Value};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "aifn",
    version,
    about = "Serverless AI functions: WASM preprocessing next to ONNX models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a host: data plane, control plane and v2 inference protocol on one address.
    Serve(ServeArgs),
    /// Run a host with the given functions deployed, in one process (the quick start).
    Up {
        /// Function specs to deploy.
        #[arg(required = true)]
        specs: Vec<PathBuf>,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Write a new function from a template: spec, model, and a module in LANG that builds and
    /// deploys as written.
    New {
        /// rust, c, python, zig or assemblyscript.
        #[arg(long = "lang", value_parser = parse_language)]
        language: aifn_spec::Language,
        name: String,
        /// Where to write it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Compile a function's module from source (the spec's `module.build`) with its language's
    /// toolchain; says what is missing and how to install it.
    Build {
        #[arg(default_value = "function.yaml")]
        spec: PathBuf,
        /// Build even when the module is up to date.
        #[arg(long)]
        force: bool,
    },
    /// Check specs and print every error with its line and column.
    Validate {
        #[arg(required = true)]
        specs: Vec<PathBuf>,
        /// Print the normalised spec (defaults filled in) when it is valid.
        #[arg(long)]
        print: bool,
    },
    /// Upload a function's spec, model and module to a host as a new version, which replaces the
    /// serving one at once or by a rollout (the spec's `rollout`, or the flags).
    Deploy {
        spec: PathBuf,
        /// Roll the new version out in steps (default 1% → 10% → 100%), judged against the stable one.
        #[arg(long, group = "strategy")]
        canary: bool,
        /// Send the new version a copy of live traffic; callers keep the stable version's answers.
        #[arg(long, group = "strategy")]
        shadow: bool,
        /// Replace the serving version at once, whatever the spec's `rollout` says.
        #[arg(long, group = "strategy")]
        immediate: bool,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Move a rollout on: its next step (or, with --full, all traffic); in a watch, end it.
    Promote {
        name: String,
        #[arg(long)]
        full: bool,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Stop a rollout: the version it started from takes all traffic back.
    Abort {
        name: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show a function's audit log: who deployed, rolled back, changed traffic, and why.
    History {
        name: String,
        /// Print the events as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Delete a function's old versions (never one serving or in a rollout) and unused artifacts.
    Prune {
        name: String,
        /// Versions to keep (default: the host's --keep-versions).
        #[arg(long)]
        keep: Option<usize>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List the functions a host serves.
    Ls {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show a function's serving version, endpoints, model signature and placement.
    Status {
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List the versions of a function the host keeps: who deployed them, when, their digests.
    Versions {
        name: String,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Put an earlier version of a function back in service (default: the one before the current;
    /// during a rollout, the version it started from).
    Rollback {
        name: String,
        /// The version to serve.
        #[arg(long)]
        to: Option<u64>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Stop serving a function (its versions stay in the host's store).
    Delete {
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// The host's model store: model ids and the files they resolve to.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// API keys for endpoints with `auth: api_key`.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Upload an ONNX file and register it under a model id.
    Push {
        id: String,
        file: PathBuf,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List registered models.
    Ls {
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; it is printed once and never again.
    Create {
        #[arg(long)]
        function: String,
        /// Limit the key to one route of the function.
        #[arg(long)]
        endpoint: Option<String>,
        /// Lifetime, such as `30d`, `12h` or `90m`.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List keys (ids and scopes, never the secrets).
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Revoke a key; it stops working at once.
    Revoke {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "AIFN_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where deployments, artifacts and the admin token are kept.
    #[arg(long, env = "AIFN_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Control-plane token; by default one is created in the state directory.
    #[arg(long, env = "AIFN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// ONNX Runtime library; by default found through ORT_DYLIB_PATH or the onnxruntime Python package.
    #[arg(long, env = "AIFN_ONNXRUNTIME")]
    onnxruntime: Option<PathBuf>,
    /// Largest request body, in bytes.
    #[arg(long, env = "AIFN_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Longest a request may take, in seconds.
    #[arg(long, env = "AIFN_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    request_timeout_secs: u64,
    /// How long a client may take to send a request's headers, in milliseconds (slow clients are cut off).
    #[arg(long, env = "AIFN_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Deadline of one module call when the spec sets none, in milliseconds.
    #[arg(long, env = "AIFN_MODULE_TIMEOUT_MS", default_value_t = 1000)]
    module_timeout_ms: u64,
    /// Largest response body or set of tensors a module may return, in bytes (larger: 500).
    #[arg(long, env = "AIFN_MAX_MODULE_OUTPUT_BYTES", default_value_t = 64 << 20)]
    max_module_output_bytes: usize,
    /// Most instances a function gets, whatever its spec asks (default: number of cores).
    #[arg(long, env = "AIFN_MAX_INSTANCES")]
    max_instances: Option<usize>,
    /// The autoscaler's stable window in seconds (Knative's: 60); its panic window is a tenth.
    #[arg(long, env = "AIFN_AUTOSCALE_WINDOW_SECS", default_value_t = 60.0)]
    autoscale_window_secs: f64,
    /// Seconds fewer instances must have been enough before the autoscaler removes any.
    #[arg(long, env = "AIFN_SCALE_DOWN_DELAY_SECS", default_value_t = 30.0)]
    scale_down_delay_secs: f64,
    /// HS256 secret that verifies JWTs on `auth: jwt` endpoints.
    #[arg(long, env = "AIFN_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// JSON Web Key Set file with the RS256 keys that verify JWTs on `auth: jwt` endpoints.
    #[arg(long, env = "AIFN_JWT_JWKS")]
    jwt_jwks: Option<PathBuf>,
    /// Requests per second the host accepts for all functions together (429 above).
    #[arg(long, env = "AIFN_MAX_REQUESTS_PER_SECOND")]
    max_requests_per_second: Option<f64>,
    /// http:// URL that rollout events (automatic rollbacks above all) are POSTed to as JSON.
    #[arg(long, env = "AIFN_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Versions kept per function; older ones not serving are pruned after each deploy.
    #[arg(long, env = "AIFN_KEEP_VERSIONS", default_value_t = 20)]
    keep_versions: usize,
    /// How often rollouts are judged, in milliseconds.
    #[arg(long, env = "AIFN_ROLLOUT_TICK_MS", default_value_t = 500)]
    rollout_tick_ms: u64,
}

#[derive(Args, Clone)]
struct RemoteArgs {
    /// The host's URL.
    #[arg(long, env = "AIFN_HOST", default_value = "http://127.0.0.1:8080")]
    host: String,
    /// Admin token; by default read from the state directory of a host on this machine.
    #[arg(long, env = "AIFN_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// State directory to read the admin token from.
    #[arg(long, env = "AIFN_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_) | Command::Up { .. });
    let default_level = if serving { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIFN_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_language(text: &str) -> Result<aifn_spec::Language, String> {
    aifn_spec::Language::parse(text).ok_or_else(|| {
        let known: Vec<&str> = aifn_spec::Language::ALL.iter().map(|l| l.name()).collect();
        format!("expected one of: {}", known.join(", "))
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args, Vec::new()),
        Command::Up { specs, serve: args } => serve(args, specs),
        Command::New {
            language,
            name,
            dir,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let spec = build::new_function(language, &name, &dir)?;
            println!("wrote a {language} function in {}", dir.display());
            println!(
                "  aifn deploy {}   # builds the module, then deploys",
                spec.display()
            );
            println!("  curl -d 'hello world' http://127.0.0.1:8080/v1/{name}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { spec, force } => {
            match build::build(&spec, force)? {
                build::Outcome::NothingToBuild => {
                    println!("{}: no spec.module.build, nothing to build", spec.display())
                }
                build::Outcome::UpToDate(wasm) => println!("{} is up to date", wasm.display()),
                build::Outcome::Compiled => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { specs, print } => validate(&specs, print),
        Command::Deploy {
            spec,
            canary,
            shadow,
            immediate,
            reason,
            remote,
        } => {
            build::build(&spec, false)?;
            let bundle = Bundle::load(&spec)?;
            let client = remote.client()?;
            let strategy = [
                (canary, "canary"),
                (shadow, "shadow"),
                (immediate, "immediate"),
            ]
            .into_iter()
            .find_map(|(set, name)| set.then_some(name));
            let outcome = client.deploy(&bundle, strategy, reason.as_deref())?;
            print_deploy(client.base(), &outcome);
            if outcome["version"] != outcome["serving_version"]
                && !outcome["serving_version"].is_null()
            {
                println!(
                    "  rolling out: `aifn status {0}` shows it, `aifn promote {0}` / `aifn abort {0}` act on it",
                    outcome["name"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Promote {
            name,
            full,
            reason,
            remote,
        } => {
            let answer = remote.client()?.post(
                &format!("/admin/v1/functions/{name}/promote"),
                json!({ "full": full, "reason": reason }),
            )?;
            match answer["rollout"]["phase"]["phase"].as_str() {
                Some("step") => println!(
                    "{name}: version {} now takes {}% of traffic",
                    answer["candidate"], answer["rollout"]["candidate_share"]
                ),
                Some("watch") => println!(
                    "{name}: version {} takes all traffic, watched until {}",
                    answer["serving"],
                    answer["rollout"]["phase"]["until_ms"]
                        .as_u64()
                        .map(format_ms)
                        .unwrap_or_default()
                ),
                _ => println!(
                    "{name}: version {} serves all traffic; rollout complete",
                    answer["serving"]
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Abort {
            name,
            reason,
            remote,
        } => {
            let answer = remote.client()?.post(
                &format!("/admin/v1/functions/{name}/abort"),
                json!({ "reason": reason }),
            )?;
            println!(
                "{name}: rollout aborted; version {} serves all traffic",
                answer["serving"]
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::History { name, json, remote } => {
            let history = remote
                .client()?
                .get(&format!("/admin/v1/functions/{name}/history"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&history["events"])?);
            } else {
                print_history(&history);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune { name, keep, remote } => {
            let outcome = remote.client()?.post(
                &format!("/admin/v1/functions/{name}/prune"),
                json!({ "keep": keep }),
            )?;
            println!(
                "{name}: removed versions {}, kept {}; removed {} unused artifact(s), {} bytes",
                outcome["pruned"],
                outcome["kept"],
                outcome["blobs_removed"],
                outcome["bytes_freed"]
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { remote } => {
            let list = remote.client()?.get("/admin/v1/functions")?;
            print_list(&list);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { name, remote } => {
            let status = remote
                .client()?
                .get(&format!("/admin/v1/functions/{name}"))?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Versions { name, json, remote } => {
            let versions = remote
                .client()?
                .get(&format!("/admin/v1/functions/{name}/versions"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&versions)?);
            } else {
                print_versions(&versions);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback {
            name,
            to,
            reason,
            remote,
        } => {
            let outcome = remote.client()?.post(
                &format!("/admin/v1/functions/{name}/rollback"),
                json!({ "to": to, "reason": reason }),
            )?;
            let verb = if outcome["unchanged"] == json!(true) {
                "already serving"
            } else {
                "rolled back to"
            };
            println!(
                "{name}: {verb} version {} ({})",
                outcome["version"],
                outcome["digest"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete { name, remote } => {
            let deleted = remote
                .client()?
                .delete(&format!("/admin/v1/functions/{name}"))?;
            println!(
                "deleted {name} (was serving version {})",
                deleted["deleted_version"]
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Models(ModelsCommand::Push { id, file, remote }) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let digest = aifn_host::store::Digest::of(&bytes);
            let client = remote.client()?;
            client.upload(&bytes, &digest)?;
            client.put(
                &format!("/admin/v1/models/{id}"),
                json!({ "digest": digest.to_string() }),
            )?;
            println!("model {id} -> {digest} ({} bytes)", bytes.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Models(ModelsCommand::Ls { remote }) => {
            let models = remote.client()?.get("/admin/v1/models")?;
            println!("{}", serde_json::to_string_pretty(&models["models"])?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Create {
            function,
            endpoint,
            expires,
            remote,
        }) => {
            let ttl_seconds = expires.as_deref().map(parse_lifetime).transpose()?;
            let key = remote.client()?.post(
                "/admin/v1/keys",
                json!({ "function": function, "endpoint": endpoint, "ttl_seconds": ttl_seconds }),
            )?;
            eprintln!(
                "key {} for {function} (shown once; the host keeps only its hash):",
                key["id"].as_str().unwrap_or("?")
            );
            println!("{}", key["key"].as_str().unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::List { remote }) => {
            let keys = remote.client()?.get("/admin/v1/keys")?;
            println!("{}", serde_json::to_string_pretty(&keys["keys"])?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Revoke { id, remote }) => {
            remote.client()?.delete(&format!("/admin/v1/keys/{id}"))?;
            println!("revoked {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A key lifetime: `30d`, or any spec duration (`12h`, `90m`).
fn parse_lifetime(text: &str) -> anyhow::Result<u64> {
    if let Some(days) = text.strip_suffix('d') {
        let days: u64 = days
            .parse()
            .with_context(|| format!("--expires: `{text}` is not a number of days"))?;
        return Ok(days * 86_400);
    }
    let seconds = aifn_spec::quantity::parse_duration(text)
        .map(|d| d.0.as_secs())
        .map_err(|m| anyhow::anyhow!("--expires: {m}"))?;
    if seconds == 0 {
        anyhow::bail!("--expires: `{text}` is under a second");
    }
    Ok(seconds)
}

fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("aifn");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/aifn"),
        None => PathBuf::from(".aifn"),
    }
}

impl RemoteArgs {
    fn client(&self) -> anyhow::Result<Client> {
        let token = match &self.token {
            Some(token) => token.clone(),
            None => {
                let path = self
                    .state_dir
                    .clone()
                    .unwrap_or_else(default_state_dir)
                    .join("admin-token");
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_string())
                    .with_context(|| {
                        format!(
                            "no admin token: pass --token or AIFN_ADMIN_TOKEN, or run on the host's machine (reading {})",
                            path.display()
                        )
                    })?
            }
        };
        Ok(Client::new(&self.host, token))
    }
}

fn validate(specs: &[PathBuf], print: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in specs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        match aifn_spec::parse(&text) {
            Ok(spec) => {
                println!(
                    "{}: valid ({} endpoint(s))",
                    path.display(),
                    spec.spec.endpoints.len()
                );
                if print {
                    print!("{}", aifn_spec::to_yaml(&spec));
                }
            }
            Err(errors) => {
                failed = true;
                println!("{}", render_spec_errors(path, &errors));
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn serve(args: ServeArgs, specs: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    // Read every spec before starting, so a typo fails fast.
    let bundles = specs
        .iter()
        .map(|p| build::build(p, false).and_then(|_| Bundle::load(p)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut config = HostConfig::new(
        args.listen,
        args.state_dir.unwrap_or_else(default_state_dir),
    );
    config.admin_token = args.admin_token;
    config.onnxruntime = args.onnxruntime;
    config.max_body_bytes = args.max_body_bytes;
    config.request_timeout = std::time::Duration::from_secs(args.request_timeout_secs);
    config.module_timeout = std::time::Duration::from_millis(args.module_timeout_ms);
    config.max_module_output_bytes = args.max_module_output_bytes.max(1);
    config.header_read_timeout = std::time::Duration::from_millis(args.header_timeout_ms.max(1));
    config.jwt_secret = args.jwt_secret;
    config.jwt_jwks = args.jwt_jwks;
    config.max_requests_per_second = args.max_requests_per_second.filter(|r| *r > 0.0);
    if let Some(max) = args.max_instances {
        config.max_instances_per_function = max.max(1);
    }
    config.autoscale_stable_window =
        std::time::Duration::from_secs_f64(args.autoscale_window_secs.max(0.1));
    config.autoscale_scale_down_delay =
        std::time::Duration::from_secs_f64(args.scale_down_delay_secs.max(0.0));
    config.webhook_url = args.webhook_url;
    config.keep_versions = args.keep_versions.max(1);
    config.rollout_tick = std::time::Duration::from_millis(args.rollout_tick_ms.max(10));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("aifn-io")
        .build()?;
    runtime.block_on(async move {
        let host = Arc::new(Host::new(config)?);
        let listener = tokio::net::TcpListener::bind(host.config.listen)
            .await
            .with_context(|| format!("listening on {}", host.config.listen))?;
        let address = listener.local_addr()?;
        host.restore().await?;
        let base = format!("http://{address}");
        for bundle in &bundles {
            let outcome = deploy_local(&host, bundle)
                .await
                .with_context(|| format!("deploying {}", bundle.spec.metadata.name))?;
            print_deploy(&base, &serde_json::to_value(outcome)?);
        }
        println!("aifn listening on {base}");
        std::io::stdout().flush()?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        };
        aifn_host::http::serve(host, listener, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `aifn up`: the same deploy as over HTTP, without the round trip.
async fn deploy_local(
    host: &Arc<Host>,
    bundle: &Bundle,
) -> anyhow::Result<aifn_host::host::DeployOutcome> {
    for artifact in bundle.artifacts() {
        if host.store.blob_size(&artifact.digest).is_none() {
            let mut writer = host.store.blob_writer()?;
            writer.write(&artifact.bytes)?;
            host.store.finish_blob(writer, &artifact.digest)?;
        }
    }
    let request = DeployRequest {
        spec: bundle.spec_yaml.clone(),
        model: bundle.model.as_ref().map(|a| a.digest.clone()),
        module: bundle.module.as_ref().map(|a| a.digest.clone()),
        fallback_model: bundle.fallback_model.as_ref().map(|a| a.digest.clone()),
        strategy: None,
        reason: Some("aifn up".into()),
    };
    host.deploy(request, &aifn_host::lifecycle::Actor("aifn up".into()))
        .await
        .map_err(|e| match e {
            aifn_host::host::DeployError::Spec(errors) => {
                anyhow::anyhow!(render_spec_errors(
                    Path::new(&bundle.spec.metadata.name),
                    &errors
                ))
            }
            other => other.into(),
        })
}

fn print_deploy(base: &str, outcome: &Value) {
    let name = outcome["name"].as_str().unwrap_or("?");
    let verb = if outcome["unchanged"] == json!(true) {
        "unchanged"
    } else {
        "deployed"
    };
    println!(
        "{verb} {name} version {} ({})",
        outcome["version"],
        outcome["digest"].as_str().unwrap_or("")
    );
    for endpoint in outcome["endpoints"].as_array().into_iter().flatten() {
        println!(
            "  {} {base}{}  (auth: {})",
            endpoint["method"].as_str().unwrap_or(""),
            endpoint["route"].as_str().unwrap_or(""),
            endpoint["auth"].as_str().unwrap_or("")
        );
    }
    println!("  POST {base}/v2/models/{name}/infer");
    for warning in outcome["warnings"].as_array().into_iter().flatten() {
        println!("  warning: {}", warning.as_str().unwrap_or(""));
    }
}

fn print_list(list: &Value) {
    let functions = list["functions"].as_array().cloned().unwrap_or_default();
    if functions.is_empty() && list["failed"].as_array().is_none_or(|f| f.is_empty()) {
        println!("no functions deployed");
        return;
    }
    println!(
        "{:<28} {:>7} {:>8}  {:<24} ENDPOINTS",
        "NAME", "VERSION", "REPLICAS", "MODEL"
    );
    for f in functions {
        let endpoints: Vec<&str> = f["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:<28} {:>7} {:>8}  {:<24} {}",
            f["name"].as_str().unwrap_or(""),
            f["version"].to_string(),
            f["replicas"].to_string(),
            f["model_id"].as_str().unwrap_or(""),
            endpoints.join(", ")
        );
    }
    for f in list["failed"].as_array().into_iter().flatten() {
        println!(
            "{:<28} FAILED: {}",
            f["name"].as_str().unwrap_or(""),
            f["error"].as_str().unwrap_or("")
        );
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 (UTC).
fn format_ms(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn print_versions(versions: &Value) {
    println!(
        "{:>7}  {:<9}  {:<20}  {:<28}  {:<19}  MODEL",
        "VERSION", "ROLE", "CREATED", "BY", "DIGEST"
    );
    for v in versions["versions"].as_array().into_iter().flatten() {
        let digest = v["digest"].as_str().unwrap_or("");
        println!(
            "{:>7}  {:<9}  {:<20}  {:<28}  {:<19}  {}",
            v["version"].to_string(),
            v["role"].as_str().unwrap_or(""),
            v["created_at"]
                .as_u64()
                .map(|s| format_ms(s * 1000))
                .unwrap_or_default(),
            v["deployed_by"].as_str().unwrap_or(""),
            &digest[..digest.len().min(19)],
            v["model"]["digest"]
                .as_str()
                .map_or("", |d| &d[..d.len().min(19)]),
        );
    }
}

fn print_history(history: &Value) {
    for e in history["events"].as_array().into_iter().flatten() {
        let version = match (e["version"].as_u64(), e["serving"].as_u64()) {
            (Some(v), Some(s)) if s != v && s != 0 => format!("v{v} (serving v{s})"),
            (Some(v), _) => format!("v{v}"),
            _ => String::new(),
        };
        println!(
            "{}  {:<16}  {:<20}  {}",
            e["at_ms"].as_u64().map(format_ms).unwrap_or_default(),
            e["action"].as_str().unwrap_or(""),
            version,
            e["actor"].as_str().unwrap_or("")
        );
        if let Some(reason) = e["reason"].as_str().filter(|r| !r.is_empty()) {
            println!("    {reason}");
        }
        if !e["figures"].is_null() {
            println!("    figures: {}", e["figures"]);
        }
    }
}
