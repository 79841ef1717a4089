//! One port, every protocol: Triton's own client (`tritonclient`, HTTP and gRPC) against the
//! bundled functions over plaintext and TLS; HTTP/2 multiplexing over h2c and TLS with ALPN;
//! a certificate replaced under load; mTLS; the CLI over https.

use crate::support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// A CA and the certificates it signs, written as PEM files into a directory.
struct TestPki {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestPki {
    fn new(dir: &Path) -> TestPki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "aifn test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        TestPki {
            dir: dir.to_path_buf(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `names` signed by the CA: its PEM, its key's PEM and its DER.
    fn issue(&self, names: &[&str], client: bool) -> (String, String, Vec<u8>) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        if client {
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// Writes a new server certificate for 127.0.0.1 over `server.pem` / `server-key.pem`, each
    /// by an atomic rename (as a certificate manager does); returns its DER.
    fn write_server(&self) -> Vec<u8> {
        let (cert, key, der) = self.issue(&["127.0.0.1", "localhost"], false);
        for (file, text) in [("server-key.pem", key), ("server.pem", cert)] {
            let temporary = self.dir.join(format!("{file}.new"));
            std::fs::write(&temporary, text).unwrap();
            std::fs::rename(&temporary, self.dir.join(file)).unwrap();
        }
        der
    }

    /// Starts a host on `state` behind TLS with the server certificate (and `extra` flags), and
    /// waits until `ready_path` answers 200 over TLS.
    fn start_host(&self, state: &Path, extra: &[&str], ready_path: &str) -> TestHost {
        let (cert, key) = (self.dir.join("server.pem"), self.dir.join("server-key.pem"));
        let mut args = vec![
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        args.extend(extra);
        let host = TestHost::start_with(state, &args);
        // With mTLS the probe has no client certificate: any TLS answer means it listens.
        wait_until(
            &format!("{ready_path} answering over TLS"),
            Duration::from_secs(60),
            || {
                let (status, _) = tls_request(self, &host.url(ready_path), "GET", "");
                (status == 200 || extra.contains(&"--tls-client-ca")).then_some(())
            },
        );
        host
    }

    /// A rustls client that trusts the CA, offers `alpn`, and shows `identity` if given.
    fn client(
        &self,
        alpn: &[&[u8]],
        identity: Option<(String, String)>,
    ) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca()).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // Every connection a full handshake: a resumed one shows no certificate (the client
        // reports the first one's), and the test looks at which certificate is served.
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

fn address(base: &str) -> String {
    base.split("://").nth(1).unwrap().to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What one TLS connection negotiated, and what its server presented.
struct TlsConnection {
    alpn: Option<Vec<u8>>,
    server_cert: Vec<u8>,
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

async fn connect_tls(
    address: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsConnection> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let (_, session) = stream.get_ref();
    Ok(TlsConnection {
        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
        server_cert: session.peer_certificates().unwrap()[0].to_vec(),
        stream,
    })
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// An HTTP/2 connection over `io` (h2c with prior knowledge, or TLS with ALPN `h2`).
async fn h2_connection<I>(io: I) -> Sender
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

const CHURN_V2: &str =
    r#"{"inputs":[{"name":"features","shape":[1,6],"datatype":"FP32","data":[42.5,12,1,0,0,1]}]}"#;

/// POSTs the churn v2 request on an HTTP/2 connection: status and body.
async fn h2_churn(sender: &mut Sender) -> Result<(u16, Value), String> {
    let request = hyper::Request::post("http://127.0.0.1/v2/models/churn-predictor/infer")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CHURN_V2.as_bytes())))
        .unwrap();
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_slice(&body.to_bytes()).map_err(|e| e.to_string())?,
    ))
}

fn churn_probability(answer: &Value) -> f64 {
    answer["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap()["data"][1]
        .as_f64()
        .unwrap()
}

/// Runs `tests/clients/SCRIPT` with the project's Python, `args` and `stdin`; insists that it
/// succeeds and decodes the JSON it printed (`what` names it in failures).
fn python_client(script: &str, args: &[&str], stdin: &str, what: &str) -> Value {
    let python = repo().join(".venv/bin/python");
    assert!(python.exists(), "no .venv: run ./scripts/setup.sh");
    let mut child = Command::new(python)
        .arg(repo().join("tests/clients").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    decode(&String::from_utf8_lossy(&output.stdout), what)
}

/// Runs tests/clients/triton_client.py with `ask` on stdin; what it printed.
fn triton_client(ask: &Value) -> Value {
    let what = format!("tritonclient ({})", ask["protocol"]);
    python_client("triton_client.py", &[], &ask.to_string(), &what)
}

fn floats_close(a: &Value, b: &Value, what: &str) {
    let (a, b) = (flatten(a), flatten(b));
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 1e-5, "{what}[{i}]: {x} vs {y}");
    }
}

fn flatten(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

#[test]
fn triton_clients_get_the_rest_answers_over_http_and_grpc_plaintext_and_tls() {
    let state = temp_dir("transport-triton");
    let pki = TestPki::new(&state.with_extension("pki").tap_mkdir());
    pki.write_server();
    let host = TestHost::start(&state);
    for name in ["churn-predictor", "text-embedder", "sentiment-analyzer"] {
        host.deploy(&bundled_spec(name, &state, &format!("{name}.yaml"), &[]));
    }
    let key = host.new_key("sentiment-analyzer");
    let rows = json!([
        [42.5, 12, 1, 0, 0, 1],
        [1, 2, 3, 0, 0, 1],
        [80, 200, 4, 1, 0, 0]
    ]);
    let case = &reference()[0];
    let ones: Vec<i64> = case.ids.iter().map(|_| 1).collect();
    let zeros: Vec<i64> = case.ids.iter().map(|_| 0).collect();
    let embedder =
        json!({ "input_ids": [case.ids], "attention_mask": [ones], "token_type_ids": [zeros] });
    let embed_body = json!({ "inputs": case.text }).to_string();
    let sentiment_body = json!({ "inputs": "This phone is amazing, I love it!" }).to_string();

    // The REST answers every client's must equal.
    let churn_rest = host
        .post(
            "/v2/models/churn-predictor/infer",
            &json!({ "inputs": [{ "name": "features", "shape": [3, 6], "datatype": "FP32", "data": rows }] })
                .to_string(),
        )
        .json();
    let embedder_inputs: Vec<Value> = ["input_ids", "attention_mask", "token_type_ids"]
        .iter()
        .map(|name| {
            json!({ "name": name, "shape": [1, case.ids.len()], "datatype": "INT64", "data": embedder[name][0] })
        })
        .collect();
    let embedder_rest = host
        .post(
            "/v2/models/text-embedder/infer",
            &json!({ "inputs": embedder_inputs }).to_string(),
        )
        .json();
    let embed_rest = host.post("/v1/embeddings", &embed_body).json();
    let sentiment_rest = host
        .post_with_key("/v1/sentiment", &sentiment_body, &key)
        .json();
    let output = |answer: &Value, name: &str| {
        answer["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap()["data"]
            .clone()
    };

    let check = |base: &str, ca: Option<PathBuf>, over: &str| {
        for protocol in ["http", "grpc"] {
            let what = format!("tritonclient.{protocol} over {over}");
            let got = triton_client(&json!({
                "url": address(base), "protocol": protocol, "ca": ca,
                "churn_rows": rows, "embedder": embedder,
                "module_calls": [
                    { "model": "text-embedder", "body": embed_body },
                    { "model": "sentiment-analyzer", "body": sentiment_body, "key": key },
                    { "model": "sentiment-analyzer", "body": sentiment_body },
                ],
            }));
            assert_eq!(
                (got["live"].as_bool(), got["ready"].as_bool()),
                (Some(true), Some(true)),
                "{what}"
            );
            assert_eq!(got["server"]["name"], "aifn", "{what}");
            assert_eq!(
                got["repository"],
                json!(["churn-predictor", "sentiment-analyzer", "text-embedder"]),
                "{what}"
            );
            let churn_meta = &got["models"]["churn-predictor"]["metadata"];
            assert_eq!(got["models"]["churn-predictor"]["ready"], true, "{what}");
            assert_eq!(churn_meta["inputs"][0]["name"], "features", "{what}");
            assert_eq!(churn_meta["platform"], "onnxruntime_onnx", "{what}");
            floats_close(
                &got["churn"]["probabilities"],
                &output(&churn_rest, "probabilities"),
                &what,
            );
            assert_eq!(
                flatten(&got["churn"]["label"]),
                flatten(&output(&churn_rest, "label")),
                "{what}"
            );
            // One output by name, and the request id back.
            assert_eq!(got["churn_selected"]["label_present"], false, "{what}");
            assert_eq!(got["churn_selected"]["id"], "r-7", "{what}");
            floats_close(
                &got["embedder"]["last_hidden_state"],
                &output(&embedder_rest, "last_hidden_state"),
                &what,
            );
            let (bad, missing) = match protocol {
                "http" => ("400", "404"),
                _ => ("StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND"),
            };
            let errors = &got["errors"];
            assert_eq!(errors["wrong_shape"]["status"], bad, "{what}: {errors}");
            assert!(
                errors["wrong_shape"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("input `features` has shape [1, 5]"),
                "{what}: {errors}"
            );
            assert_eq!(
                errors["unknown_model"]["status"], missing,
                "{what}: {errors}"
            );
            assert_eq!(
                errors["unknown_version"]["status"], missing,
                "{what}: {errors}"
            );
            if protocol == "grpc" {
                // Through the modules: the function's own answers, and its auth.
                let module = got["module"].as_array().unwrap();
                let embedded: Value =
                    serde_json::from_str(module[0]["body"].as_str().unwrap()).unwrap();
                floats_close(&embedded["embedding"], &embed_rest["embedding"], &what);
                let sentiment: Value =
                    serde_json::from_str(module[1]["body"].as_str().unwrap()).unwrap();
                assert_eq!(sentiment["label"], sentiment_rest["label"], "{what}");
                floats_close(
                    &sentiment["probability"],
                    &sentiment_rest["probability"],
                    &what,
                );
                assert_eq!(
                    module[2]["status"], "StatusCode.UNAUTHENTICATED",
                    "{what}: {module:?}"
                );
            }
        }
    };
    check(&host.base, None, "plaintext");
    drop(host);

    // The same host state behind TLS.
    let host = pki.start_host(&state, &[], "/readyz");
    assert!(host.base.starts_with("https://"), "{}", host.base);
    check(&host.base, Some(pki.ca()), "TLS");
}

/// A request over https trusting the test CA (ureq, HTTP/1.1): status and body.
fn tls_request(pki: &TestPki, url: &str, method: &str, body: &str) -> (u16, String) {
    let pem = std::fs::read(pki.ca()).unwrap();
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item.unwrap() {
            ureq::tls::PemItem::Certificate(cert) => Some(cert),
            _ => None,
        })
        .collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        )
        .build()
        .into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec())
        .unwrap();
    match agent.run(request) {
        Ok(mut response) => (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

trait MakeDir {
    fn tap_mkdir(self) -> Self;
}

impl MakeDir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn http2_multiplexes_streams_and_alpn_picks_the_protocol() {
    let state = temp_dir("transport-h2");
    let pki = TestPki::new(&state.with_extension("pki").tap_mkdir());
    pki.write_server();
    let host = TestHost::start(&state);
    host.deploy(&churn_spec(&state, "churn.yaml", &[]));
    let expected = churn_probability(
        &host
            .post("/v2/models/churn-predictor/infer", CHURN_V2)
            .json(),
    );
    let rt = runtime();

    // h2c with prior knowledge: 100 requests as concurrent streams of one connection (within
    // what the instances queue).
    let address_plain = address(&host.base);
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&address_plain)
            .await
            .unwrap();
        let sender = h2_connection(tcp).await;
        let calls = (0..100).map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move { h2_churn(&mut sender).await })
        });
        let mut answered = 0;
        for call in calls.collect::<Vec<_>>() {
            let (status, answer) = call.await.unwrap().unwrap();
            assert_eq!(status, 200, "{answer}");
            assert!((churn_probability(&answer) - expected).abs() < 1e-6);
            answered += 1;
        }
        assert_eq!(answered, 100);
    });
    // HTTP/1.1 clients on the same port are unaffected.
    assert_eq!(
        host.post("/v2/models/churn-predictor/infer", CHURN_V2)
            .status,
        200
    );

    // A grpcurl-style client that knows no proto: health, then reflection's descriptors to
    // build and send a ModelInfer.
    let seen = python_client(
        "reflection_client.py",
        &[address_plain.as_str(), "churn-predictor"],
        "",
        "the reflection client",
    );
    assert_eq!(seen["health"][""], "SERVING", "{seen}");
    assert_eq!(
        seen["health"]["inference.GRPCInferenceService"], "SERVING",
        "{seen}"
    );
    let services = seen["services"].as_array().unwrap();
    for service in ["inference.GRPCInferenceService", "grpc.health.v1.Health"] {
        assert!(services.iter().any(|s| s == service), "{seen}");
    }
    assert_eq!(seen["infer_input_type"], "inference.ModelInferRequest");
    let p = seen["outputs"]["probabilities"][1].as_f64().unwrap();
    assert!((p - expected).abs() < 1e-6, "{p} vs {expected}");
    drop(host);

    let host = pki.start_host(&state, &[], "/v2/models/churn-predictor/ready");
    let address_tls = address(&host.base);
    rt.block_on(async {
        // ALPN: h2 when offered, http/1.1 when only it is.
        let h2 = connect_tls(&address_tls, pki.client(&[b"h2", b"http/1.1"], None))
            .await
            .unwrap();
        assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
        let sender = h2_connection(h2.stream).await;
        let calls: Vec<_> = (0..100)
            .map(|_| {
                let mut sender = sender.clone();
                tokio::spawn(async move { h2_churn(&mut sender).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap().0, 200);
        }
        let h1 = connect_tls(&address_tls, pki.client(&[b"http/1.1"], None))
            .await
            .unwrap();
        assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(h1.stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let response = sender
            .send_request(
                hyper::Request::get("/healthz")
                    .header("host", "127.0.0.1")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    });
}

#[test]
fn a_certificate_replaced_under_load_fails_no_request_and_mtls_refuses_strangers() {
    let state = temp_dir("transport-reload");
    let pki = TestPki::new(&state.with_extension("pki").tap_mkdir());
    let first = pki.write_server();
    let host = TestHost::start(&state);
    host.deploy(&churn_spec(&state, "churn.yaml", &[]));
    drop(host);
    let host = pki.start_host(&state, &[], "/v2/models/churn-predictor/ready");
    let tls_address = address(&host.base);
    let rt = runtime();
    let config = pki.client(&[b"h2"], None);

    let (served, failed, second) = rt.block_on(async {
        // A connection opened before the change, used after it.
        let before = connect_tls(&tls_address, config.clone()).await.unwrap();
        assert_eq!(before.server_cert, first);
        let mut kept = h2_connection(before.stream).await;

        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        // Load: 4 clients, each a new TLS connection per 5 requests (so new handshakes meet the
        // new certificate), bounded by a stop flag and 3,000 requests each.
        let load: Vec<_> = (0..4)
            .map(|_| {
                let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
                let (address, config) = (tls_address.clone(), config.clone());
                tokio::spawn(async move {
                    let mut sent = 0;
                    while !stop.load(Ordering::Relaxed) && sent < 3000 {
                        let connection = match connect_tls(&address, config.clone()).await {
                            Ok(connection) => connection,
                            Err(e) => {
                                failed.lock().unwrap().push(format!("handshake: {e}"));
                                continue;
                            }
                        };
                        let mut sender = h2_connection(connection.stream).await;
                        for _ in 0..5 {
                            sent += 1;
                            match h2_churn(&mut sender).await {
                                Ok((200, _)) => {
                                    served.fetch_add(1, Ordering::Relaxed);
                                }
                                other => failed.lock().unwrap().push(format!("{other:?}")),
                            }
                        }
                    }
                })
            })
            .collect();
        let started = Instant::now();
        while served.load(Ordering::Relaxed) < 50 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no load served; failures: {:?}",
                &failed.lock().unwrap()[..failed.lock().unwrap().len().min(3)]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let second = pki.write_server();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let seen = connect_tls(&tls_address, config.clone())
                .await
                .unwrap()
                .server_cert;
            if seen == second {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new certificate was not served within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Load goes on a while with the new certificate.
        let at_swap = served.load(Ordering::Relaxed);
        while served.load(Ordering::Relaxed) < at_swap + 50 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no load served after the swap"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for task in load {
            task.await.unwrap();
        }
        assert_eq!(
            h2_churn(&mut kept).await.unwrap().0,
            200,
            "the old connection was dropped"
        );
        let failed = failed.lock().unwrap().clone();
        (served.load(Ordering::Relaxed), failed, second)
    });
    assert!(
        failed.is_empty(),
        "{} of {served} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(served >= 100, "{served}");
    assert_ne!(second, first);
    drop(host);

    // mTLS: a client without a certificate from the CA is refused; one with it is served.
    let ca = pki.ca().display().to_string();
    let host = pki.start_host(&state, &["--tls-client-ca", &ca], "/healthz");
    let mtls_address = address(&host.base);
    let (cert, key, _) = pki.issue(&["client"], true);
    let with_identity = pki.client(&[b"h2"], Some((cert, key)));
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let connection = connect_tls(&mtls_address, with_identity.clone())
                .await
                .unwrap();
            let mut sender = h2_connection(connection.stream).await;
            if let Ok((200, _)) = h2_churn(&mut sender).await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a client with a certificate was not served"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // TLS 1.3 reports the refusal after the handshake: the first request fails.
        let refused = match connect_tls(&mtls_address, pki.client(&[b"h2"], None)).await {
            Err(_) => true,
            Ok(connection) => {
                let handshake =
                    hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(
                            connection.stream,
                        ))
                        .await;
                match handshake {
                    Err(_) => true,
                    Ok((mut sender, connection)) => {
                        tokio::spawn(connection);
                        h2_churn(&mut sender).await.is_err()
                    }
                }
            }
        };
        assert!(refused, "a client without a certificate was served");
    });
}

#[test]
fn the_cli_speaks_https_and_trusts_the_ca_it_is_given() {
    let state = temp_dir("transport-cli");
    let pki = TestPki::new(&state.with_extension("pki").tap_mkdir());
    pki.write_server();
    let host = pki.start_host(&state, &[], "/healthz");
    assert!(
        host.admin_base.starts_with("https://"),
        "{}",
        host.admin_base
    );
    let ca = pki.ca().display().to_string();
    let spec = churn_spec(&state, "churn.yaml", &[]);
    let deployed = host.cli(&["deploy", spec.to_str().unwrap(), "--ca-file", &ca]);
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let listed = host.cli(&["ls", "--ca-file", &ca]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("churn-predictor"));
    // Without the CA, the host's certificate is not trusted.
    let untrusted = host.cli(&["ls"]);
    assert!(!untrusted.status.success());
    let said = String::from_utf8_lossy(&untrusted.stderr).to_lowercase();
    assert!(
        said.contains("certificate") || said.contains("cannot reach"),
        "{said}"
    );
    let (status, body) = tls_request(
        &pki,
        &host.url("/v1/churn"),
        "POST",
        r#"{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}"#,
    );
    assert_eq!(status, 200, "{body}");
}

/// A test identity provider: OpenID discovery and a JWKS of ES256 keys it can rotate, on
/// 127.0.0.1, counting the JWKS fetches. Dropping it stops it (the provider goes down).
struct TestIdp {
    base: String,
    jwks: Arc<std::sync::Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    last_fetch: Arc<std::sync::Mutex<Option<Instant>>>,
    /// Calls to its RFC 7662 introspection endpoint.
    introspections: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A signing key of the provider: its `kid` and PEM (PKCS#8).
struct SigningKey {
    kid: String,
    pem: String,
    jwk: Value,
}

fn base64url(bytes: &[u8]) -> String {
    use base64::prelude::{Engine as _, BASE64_URL_SAFE_NO_PAD};
    BASE64_URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = key.public_key_raw(); // 0x04 || x || y
        SigningKey {
            kid: kid.to_string(),
            pem: key.serialize_pem(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": base64url(&point[1..33]), "y": base64url(&point[33..65]),
            }),
        }
    }

    fn token(&self, issuer: &str, subject: &str) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        jsonwebtoken::encode(
            &header,
            &json!({ "iss": issuer, "aud": "churn-api", "sub": subject, "exp": exp }),
            &jsonwebtoken::EncodingKey::from_ec_pem(self.pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }
}

impl TestIdp {
    fn start(rt: &tokio::runtime::Runtime, keys: &[&SigningKey]) -> TestIdp {
        let jwks = Arc::new(std::sync::Mutex::new(
            json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }),
        ));
        let fetches = Arc::new(AtomicUsize::new(0));
        let last_fetch = Arc::new(std::sync::Mutex::new(None));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let introspections = Arc::new(AtomicUsize::new(0));
        let (j, f, l, b, i) = (
            jwks.clone(),
            fetches.clone(),
            last_fetch.clone(),
            base.clone(),
            introspections.clone(),
        );
        rt.spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap(),
                    _ = &mut stopped => return,
                };
                let (j, f, l, b, i) = (j.clone(), f.clone(), l.clone(), b.clone(), i.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let (j, f, l, b, i) =
                                (j.clone(), f.clone(), l.clone(), b.clone(), i.clone());
                            async move {
                                let path = request.uri().path().to_string();
                                let basic = request
                                    .headers()
                                    .get("authorization")
                                    .map(|v| v.to_str().unwrap().to_string());
                                let body = match path.as_str() {
                                    "/.well-known/openid-configuration" => {
                                        json!({ "issuer": b, "jwks_uri": format!("{b}/jwks") })
                                    }
                                    "/introspect" => {
                                        i.fetch_add(1, Ordering::SeqCst);
                                        let form =
                                            request.into_body().collect().await.unwrap().to_bytes();
                                        let form = String::from_utf8_lossy(&form).to_string();
                                        // RFC 7662 §2.1: the client authenticates (aifn:s3cret).
                                        let client_ok =
                                            basic.as_deref() == Some("Basic YWlmbjpzM2NyZXQ=");
                                        let exp = std::time::SystemTime::now()
                                            .duration_since(std::time::UNIX_EPOCH)
                                            .unwrap()
                                            .as_secs()
                                            + 600;
                                        if client_ok && form.contains("token=opaque-good") {
                                            json!({ "active": true, "sub": "bob", "aud": "churn-api", "iss": b, "exp": exp })
                                        } else {
                                            json!({ "active": false })
                                        }
                                    }
                                    _ => {
                                        f.fetch_add(1, Ordering::SeqCst);
                                        *l.lock().unwrap() = Some(Instant::now());
                                        j.lock().unwrap().clone()
                                    }
                                };
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .header("content-type", "application/json")
                                        .header("cache-control", "public, max-age=300")
                                        .body(Full::new(Bytes::from(body.to_string())))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestIdp {
            base,
            jwks,
            fetches,
            last_fetch,
            introspections,
            _stop: stop,
        }
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.jwks.lock().unwrap() =
            json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    }
}

#[test]
fn jwt_keys_follow_the_issuers_rotation_through_discovery() {
    let state = temp_dir("transport-oauth");
    let rt = runtime();
    let (first, second) = (SigningKey::new("key-1"), SigningKey::new("key-2"));
    let idp = TestIdp::start(&rt, &[&first]);
    let host = TestHost::start(&state);
    let spec = churn_spec(
        &state,
        "churn-jwt.yaml",
        &[(
            "      auth: none\n",
            &format!("      auth: jwt\n      jwt: {{ issuer: \"{}\", audience: churn-api, keys: discovery }}\n", idp.base),
        )],
    );
    host.deploy(&spec);
    let customer = r#"{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}"#;
    let call = |token: &str| {
        request(
            &host.url("/v1/churn"),
            "POST",
            customer.as_bytes(),
            &[("authorization", &format!("Bearer {token}"))],
        )
    };

    // A storm of tokens with a kid nobody published, as the first traffic: one JWKS fetch.
    let stranger = SigningKey::new("unknown-kid");
    let bogus = stranger.token(&idp.base, "mallory");
    std::thread::scope(|scope| {
        let storm: Vec<_> = (0..32)
            .map(|_| scope.spawn(|| call(&bogus).status))
            .collect();
        for caller in storm {
            assert_eq!(caller.join().unwrap(), 401);
        }
    });
    assert_eq!(
        idp.fetches.load(Ordering::SeqCst),
        1,
        "the storm's JWKS fetches"
    );
    let refused = call(&bogus);
    assert!(
        refused.error_message().contains("kid `unknown-kid`"),
        "{}",
        refused.body
    );

    // Known keys serve; then the provider rotates mid-run and callers move to the new key.
    let token = first.token(&idp.base, "alice");
    assert_eq!(call(&token).status, 200);
    wait_until(
        "the refresh cooldown passed since the last fetch",
        Duration::from_secs(10),
        || {
            let last = idp.last_fetch.lock().unwrap().unwrap();
            (last.elapsed() > Duration::from_millis(2100)).then_some(())
        },
    );
    let fetches_before = idp.fetches.load(Ordering::SeqCst);
    let stop = AtomicBool::new(false);
    let rotated = AtomicBool::new(false);
    let (served, failed) = (AtomicUsize::new(0), std::sync::Mutex::new(Vec::new()));
    let new_token = second.token(&idp.base, "alice");
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) && sent < 2000 {
                    sent += 1;
                    let token = if rotated.load(Ordering::Relaxed) {
                        &new_token
                    } else {
                        &token
                    };
                    let reply = call(token);
                    if reply.status == 200 {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", reply.status, reply.body));
                    }
                }
            });
        }
        wait_until("load served", Duration::from_secs(30), || {
            (served.load(Ordering::Relaxed) > 50).then_some(())
        });
        // Rotation: the new key is published, then used; the old one is withdrawn.
        idp.publish(&[&first, &second]);
        rotated.store(true, Ordering::Relaxed);
        let at_rotation = served.load(Ordering::Relaxed);
        wait_until(
            "load served with the new key",
            Duration::from_secs(30),
            || (served.load(Ordering::Relaxed) > at_rotation + 100).then_some(()),
        );
        idp.publish(&[&second]);
        stop.store(true, Ordering::Relaxed);
    });
    let failed = failed.into_inner().unwrap();
    assert!(
        failed.is_empty(),
        "{} requests failed across the rotation: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(
        idp.fetches.load(Ordering::SeqCst),
        fetches_before + 1,
        "one fetch for the new key"
    );

    // The provider goes down: tokens with known keys still pass.
    drop(idp);
    for _ in 0..20 {
        assert_eq!(call(&new_token).status, 200);
    }
}

#[test]
fn grpc_calls_share_the_endpoints_rate_limit_and_back_off_as_told() {
    let state = temp_dir("transport-grpc-limit");
    let host = TestHost::start(&state);
    host.deploy(&churn_spec(
        &state,
        "churn-limited.yaml",
        &[(
            "      auth: none\n",
            "      auth: none\n      rate_limit: {requests_per_second: 0.1, burst: 3}\n",
        )],
    ));
    let seen = python_client(
        "grpc_rate_limit.py",
        &[address(&host.base).as_str(), "5"],
        "",
        "the rate-limit client",
    );
    assert_eq!(
        seen["codes"],
        json!(["OK", "OK", "OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]),
        "{seen}"
    );
    let refusal = &seen["refusal"];
    assert_eq!(refusal["x_aifn_error"], "rate_limited", "{seen}");
    assert_eq!(refusal["has_status_details"], true, "RetryInfo: {seen}");
    let wait: u64 = refusal["retry_after"].as_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "{seen}");
    // The REST route shares the budget: it is spent.
    let body = CHURN_V2;
    assert_eq!(
        host.post("/v2/models/churn-predictor/infer", body).status,
        429
    );
}

#[test]
fn v2_versions_routes_serve_the_stable_version_and_the_candidate_by_number() {
    let state = temp_dir("transport-versions");
    let host = TestHost::start(&state);
    let version = |file: &str, tag: &str, rollout: &str| {
        churn_spec(
            &state,
            file,
            &[
                (
                    "domain: retention",
                    &format!("domain: retention\n    tag: {tag}"),
                ),
                (
                    "  endpoints:",
                    &format!("  rollout:\n{rollout}\n  endpoints:"),
                ),
            ],
        )
    };
    host.deploy(&version("v1.yaml", "v1", "    strategy: immediate"));
    // A canary held at its first step for the whole test.
    let out = host.cli_ok(&[
        "deploy",
        version(
            "v2.yaml",
            "v2",
            "    strategy: canary\n    steps: [50, 100]\n    step_duration: 10m",
        )
        .to_str()
        .unwrap(),
    ]);
    assert!(out.contains("rolling out"), "{out}");
    let metadata = host.get("/v2/models/churn-predictor").json();
    assert_eq!(metadata["versions"], json!(["1", "2"]), "{metadata}");
    for v in ["1", "2"] {
        let reply = host.post(
            &format!("/v2/models/churn-predictor/versions/{v}/infer"),
            CHURN_V2,
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["model_version"], v);
        assert_eq!(reply.header("x-aifn-version"), Some(v));
        let meta = host
            .get(&format!("/v2/models/churn-predictor/versions/{v}"))
            .json();
        assert_eq!(meta["versions"], json!([v]));
    }
    let gone = host.get("/v2/models/churn-predictor/versions/3/ready");
    assert_eq!(gone.status, 404);
    assert_eq!(
        gone.json()["error"],
        "version 3 of `churn-predictor` is not serving; serving: 1, 2"
    );
}

#[test]
fn opaque_tokens_are_introspected_once_and_the_answers_cached() {
    let state = temp_dir("transport-introspection");
    let rt = runtime();
    let idp = TestIdp::start(&rt, &[]);
    let host = TestHost::start_with(
        &state,
        &[
            "--introspection-client-id",
            "aifn",
            "--introspection-client-secret",
            "s3cret",
        ],
    );
    let rule = format!(
        "      auth: jwt\n      jwt: {{ issuer: \"{0}\", audience: churn-api, introspection: \"{0}/introspect\" }}\n",
        idp.base
    );
    host.deploy(&churn_spec(
        &state,
        "churn-opaque.yaml",
        &[("      auth: none\n", &rule)],
    ));
    let customer = r#"{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}"#;
    let call = |token: &str| {
        request(
            &host.url("/v1/churn"),
            "POST",
            customer.as_bytes(),
            &[("authorization", &format!("Bearer {token}"))],
        )
    };
    // Concurrent first uses of one token share one introspection; later ones use the cache.
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| call("opaque-good").status))
            .collect();
        for caller in callers {
            assert_eq!(caller.join().unwrap(), 200);
        }
    });
    for _ in 0..10 {
        assert_eq!(call("opaque-good").status, 200);
    }
    assert_eq!(idp.introspections.load(Ordering::SeqCst), 1);
    // An inactive token: 401, and the refusal is cached too.
    let refused = call("opaque-revoked");
    assert_eq!(refused.status, 401);
    assert!(
        refused.error_message().contains("not active"),
        "{}",
        refused.body
    );
    assert_eq!(call("opaque-revoked").status, 401);
    assert_eq!(idp.introspections.load(Ordering::SeqCst), 2);
}
