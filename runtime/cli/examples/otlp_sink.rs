//! An OTLP/HTTP receiver for benchmarks: it decodes every `POST /v1/traces` (protobuf), counts
//! the spans, and answers `GET /count` with how many it has taken. `bench/tracing.sh` runs it.
//!
//!   cargo run --release -p aifn --example otlp_sink     (prints `otlp sink on http://ADDR`)

use http_body_util::{BodyExt as _, Full};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use std::convert::Infallible;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("otlp sink on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let spans = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        let spans = spans.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |request| {
                let spans = spans.clone();
                async move { answer(&spans, request).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                .await;
        });
    }
}

async fn answer(
    spans: &AtomicU64,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<bytes::Bytes>>, Infallible> {
    if request.uri().path() == "/count" {
        let count = spans.load(Ordering::Relaxed).to_string();
        return Ok(hyper::Response::new(Full::new(count.into())));
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(status(400)),
    };
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return Ok(status(400));
    };
    let taken: usize = export
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    spans.fetch_add(taken as u64, Ordering::Relaxed);
    let answer = ExportTraceServiceResponse {
        partial_success: None,
    };
    Ok(hyper::Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(answer.encode_to_vec().into()))
        .expect("a valid answer"))
}

fn status(code: u16) -> hyper::Response<Full<bytes::Bytes>> {
    hyper::Response::builder()
        .status(code)
        .body(Full::new(bytes::Bytes::new()))
        .expect("a valid answer")
}
