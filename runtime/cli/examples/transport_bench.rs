//! Transport benchmark (run by `bench/transport.sh`): the same model over REST JSON and over gRPC
//! with raw tensors, for a small request (one churn customer) and a large one (43,690 customers,
//! 1 MB of FP32), at concurrency 1 and 64; and REST over TLS against plaintext with connection
//! reuse. Every round measures every case in turn, so drift on a noisy machine hits all alike.
//!
//! cargo run --release -p aifn --example transport_bench -- PLAIN_ADDR TLS_ADDR CA.pem SECONDS ROUNDS OUT.json
//! cargo run --release -p aifn --example transport_bench -- certs DIR   (a CA and a 127.0.0.1 certificate)

use aifn_host::http::grpc::proto::{
    model_infer_request::InferInputTensor, ModelInferRequest, ModelInferResponse,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LARGE_ROWS: usize = 43_690;
const CHURN: [f32; 6] = [42.5, 12.0, 1.0, 0.0, 0.0, 1.0];

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    RestJson,
    GrpcRaw,
}

#[derive(Clone)]
struct Case {
    name: String,
    protocol: Protocol,
    tls: bool,
    rows: usize,
    concurrency: usize,
}

fn rows_of(rows: usize) -> Vec<f32> {
    (0..rows).flat_map(|_| CHURN).collect()
}

fn rest_body(rows: usize) -> Bytes {
    let data = rows_of(rows);
    Bytes::from(
        json!({ "inputs": [{ "name": "features", "shape": [rows, 6], "datatype": "FP32", "data": data }] })
            .to_string(),
    )
}

fn grpc_body(rows: usize) -> Bytes {
    let raw: Vec<u8> = rows_of(rows).iter().flat_map(|x| x.to_le_bytes()).collect();
    let message = ModelInferRequest {
        model_name: "churn-predictor".into(),
        inputs: vec![InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 6],
            ..Default::default()
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    };
    let encoded = message.encode_to_vec();
    let mut framed = Vec::with_capacity(encoded.len() + 5);
    framed.push(0);
    framed.extend((encoded.len() as u32).to_be_bytes());
    framed.extend(encoded);
    Bytes::from(framed)
}

type Io = Box<dyn IoStream>;
trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> IoStream for T {}

async fn connect(address: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Io {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    match tls {
        None => Box::new(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            Box::new(
                tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .unwrap(),
            )
        }
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One client connection: HTTP/1.1 for REST (one request at a time), HTTP/2 for gRPC.
async fn open(case: &Case, address: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Sender {
    let io = hyper_util::rt::TokioIo::new(connect(address, tls).await);
    match case.protocol {
        Protocol::RestJson => {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            Sender::H1(sender)
        }
        Protocol::GrpcRaw => {
            let (sender, connection) =
                hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .initial_stream_window_size(8 << 20)
                    .initial_connection_window_size(32 << 20)
                    .handshake(io)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            Sender::H2(sender)
        }
    }
}

async fn call(sender: &mut Sender, case: &Case, body: &Bytes) {
    let scheme = if case.tls { "https" } else { "http" };
    let (response, expected_rows) = match sender {
        Sender::H1(sender) => {
            let request = hyper::Request::post(format!(
                "{scheme}://127.0.0.1/v2/models/churn-predictor/infer"
            ))
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
            sender.ready().await.unwrap();
            (sender.send_request(request).await.unwrap(), case.rows)
        }
        Sender::H2(sender) => {
            let request = hyper::Request::post(format!(
                "{scheme}://127.0.0.1/inference.GRPCInferenceService/ModelInfer"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(body.clone()))
            .unwrap();
            sender.ready().await.unwrap();
            (sender.send_request(request).await.unwrap(), case.rows)
        }
    };
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    if case.protocol == Protocol::GrpcRaw {
        if let Some(trailers) = collected.trailers() {
            let status = trailers.get("grpc-status").map(|v| v.as_bytes().to_vec());
            assert_eq!(status.as_deref(), Some(&b"0"[..]), "{trailers:?}");
        }
        let bytes = collected.to_bytes();
        let answer = ModelInferResponse::decode(&bytes[5..]).unwrap();
        assert_eq!(
            answer
                .outputs
                .iter()
                .find(|o| o.name == "probabilities")
                .unwrap()
                .shape[0] as usize,
            expected_rows
        );
    } else {
        let bytes = collected.to_bytes();
        assert!(
            bytes.starts_with(b"{"),
            "{}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        );
    }
}

/// Runs `case` for `seconds`: requests per second and the p99 in milliseconds.
async fn measure(
    case: &Case,
    address: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    seconds: f64,
) -> (f64, f64, usize) {
    let body = match case.protocol {
        Protocol::RestJson => rest_body(case.rows),
        Protocol::GrpcRaw => grpc_body(case.rows),
    };
    // gRPC multiplexes: 8 connections carry 64 streams. REST: one connection per caller.
    let connections = match case.protocol {
        Protocol::RestJson => case.concurrency,
        Protocol::GrpcRaw => case.concurrency.min(8),
    };
    let mut senders = Vec::new();
    for _ in 0..connections {
        senders.push(open(case, address, tls).await);
    }
    let h2: Vec<_> = senders
        .iter()
        .filter_map(|s| match s {
            Sender::H2(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let mut h1: Vec<_> = senders
        .into_iter()
        .filter_map(|s| match s {
            Sender::H1(s) => Some(s),
            _ => None,
        })
        .collect();
    // Warm up the connections.
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..case.concurrency)
        .map(|i| {
            let mut sender = match case.protocol {
                Protocol::GrpcRaw => Sender::H2(h2[i % h2.len()].clone()),
                Protocol::RestJson => Sender::H1(h1.pop().unwrap()),
            };
            let (case, body) = (case.clone(), body.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                call(&mut sender, &case, &body).await;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    call(&mut sender, &case, &body).await;
                    latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p99 = latencies[((latencies.len() as f64 * 0.99) as usize).min(latencies.len() - 1)];
    (latencies.len() as f64 / elapsed, p99, latencies.len())
}

/// CPU seconds (user + system) the process has used, from /proc (0 when unknown).
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
    else {
        return 0.0;
    };
    // After the command name come field 3 (state) onwards; utime is 14, stime 15 (clock ticks).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / 100.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// Writes DIR/ca.pem, DIR/server.pem and DIR/server-key.pem for the TLS host.
fn write_certs(dir: &str) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(format!("{dir}/ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(format!("{dir}/server.pem"), cert.pem()).unwrap();
    std::fs::write(format!("{dir}/server-key.pem"), key.serialize_pem()).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, command, dir] = args.as_slice() {
        if command == "certs" {
            return write_certs(dir);
        }
    }
    let [_, plain, tls_address, ca, seconds, rounds, out] = args.as_slice() else {
        eprintln!("usage: transport_bench PLAIN_ADDR TLS_ADDR CA.pem SECONDS ROUNDS OUT.json");
        std::process::exit(2);
    };
    let seconds: f64 = seconds.parse().unwrap();
    // The hosts' process ids (AIFN_BENCH_PIDS=PLAIN,TLS), for their CPU per request.
    let pids: (Option<u32>, Option<u32>) = std::env::var("AIFN_BENCH_PIDS")
        .ok()
        .and_then(|v| {
            let (a, b) = v.split_once(',')?;
            Some((a.parse().ok(), b.parse().ok()))
        })
        .unwrap_or((None, None));
    let rounds: usize = rounds.parse().unwrap();
    let tls_config = {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    };
    let mut cases = Vec::new();
    for (size, rows) in [("small", 1), ("large", LARGE_ROWS)] {
        for concurrency in [1, 64] {
            for (protocol, label) in [
                (Protocol::RestJson, "rest_json"),
                (Protocol::GrpcRaw, "grpc_raw"),
            ] {
                cases.push(Case {
                    name: format!("{label}_{size}_c{concurrency}"),
                    protocol,
                    tls: false,
                    rows,
                    concurrency,
                });
            }
        }
    }
    for tls in [false, true] {
        let name = if tls {
            "rest_json_small_c64_tls"
        } else {
            "rest_json_small_c64_plain"
        };
        cases.push(Case {
            name: name.into(),
            protocol: Protocol::RestJson,
            tls,
            rows: 1,
            concurrency: 64,
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); cases.len()];
    for round in 1..=rounds {
        for (i, case) in cases.iter().enumerate() {
            let (address, tls) = if case.tls {
                (tls_address.as_str(), Some(&tls_config))
            } else {
                (plain.as_str(), None)
            };
            let pid = if case.tls { pids.1 } else { pids.0 };
            let cpu_before = cpu_seconds(pid);
            let (rps, p99, count) = runtime.block_on(measure(case, address, tls, seconds));
            let cpu_us = (cpu_seconds(pid) - cpu_before) * 1e6 / count as f64;
            let measured = (rps, p99, cpu_us);
            eprintln!(
                "round {round} {:<28} {:>9.0} req/s  p99 {:>8.2} ms  host CPU {:>7.1} us/request",
                case.name, measured.0, measured.1, measured.2
            );
            results[i].push(measured);
        }
    }
    let by_name = |name: &str| cases.iter().position(|c| c.name == name).unwrap();
    let ratio = |a: &str, b: &str| -> Vec<f64> {
        results[by_name(a)]
            .iter()
            .zip(&results[by_name(b)])
            .map(|(x, y)| x.0 / y.0)
            .collect()
    };
    // The host's own cost of TLS: its CPU per request over TLS against plaintext (the client's
    // TLS runs on the same cores and lowers both throughputs).
    let cpu_ratio: Vec<f64> = results[by_name("rest_json_small_c64_tls")]
        .iter()
        .zip(&results[by_name("rest_json_small_c64_plain")])
        .map(|(t, p)| t.2 / p.2)
        .collect();
    if pids.0.is_some() {
        println!(
            "host_cpu_per_request_tls_over_plaintext_rest_small_c64: median {:.3} (rounds {:?})",
            median(cpu_ratio.clone()),
            cpu_ratio
                .iter()
                .map(|r| (r * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        );
    }
    let mut ratios = serde_json::Map::new();
    for (label, a, b) in [
        (
            "grpc_raw_over_rest_json_large_c1",
            "grpc_raw_large_c1",
            "rest_json_large_c1",
        ),
        (
            "grpc_raw_over_rest_json_large_c64",
            "grpc_raw_large_c64",
            "rest_json_large_c64",
        ),
        (
            "grpc_raw_over_rest_json_small_c1",
            "grpc_raw_small_c1",
            "rest_json_small_c1",
        ),
        (
            "grpc_raw_over_rest_json_small_c64",
            "grpc_raw_small_c64",
            "rest_json_small_c64",
        ),
        (
            "tls_over_plaintext_rest_small_c64",
            "rest_json_small_c64_tls",
            "rest_json_small_c64_plain",
        ),
    ] {
        let per_round = ratio(a, b);
        println!(
            "{label}: median {:.3} (rounds {:?})",
            median(per_round.clone()),
            per_round
                .iter()
                .map(|r| (r * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        );
        ratios.insert(
            label.into(),
            json!({ "median": median(per_round.clone()), "rounds": per_round }),
        );
    }
    let report = json!({
        "seconds_per_case": seconds,
        "rounds": rounds,
        "large_request": { "rows": LARGE_ROWS, "tensor_bytes": LARGE_ROWS * 6 * 4 },
        "cases": cases.iter().zip(&results).map(|(case, r)| json!({
            "case": case.name,
            "requests_per_second": r.iter().map(|m| m.0).collect::<Vec<_>>(),
            "p99_ms": r.iter().map(|m| m.1).collect::<Vec<_>>(),
            "host_cpu_us_per_request": r.iter().map(|m| m.2).collect::<Vec<_>>(),
            "median_requests_per_second": median(r.iter().map(|m| m.0).collect()),
            "median_p99_ms": median(r.iter().map(|m| m.1).collect()),
        })).collect::<Vec<_>>(),
        "ratios": ratios,
        "host_cpu_per_request_tls_over_plaintext": { "median": median(cpu_ratio.clone()), "rounds": cpu_ratio },
    });
    std::fs::write(out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
}
