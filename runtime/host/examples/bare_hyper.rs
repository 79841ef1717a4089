//! Baseline for `bench/cache_hit.sh`: a bare hyper server answering every request with fixed bytes,
//! on the same runtime settings as the host. Prints `listening on http://ADDR`.
//!
//! cargo run --release -p aifn-host --example bare_hyper -- BODY ["NAME: VALUE" ...]
//!
//! Each further argument is a header the answer carries besides `content-type` (the cache hit's
//! own headers, so the two answers can be the same bytes).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let body = Bytes::from(args.next().unwrap_or_else(|| "{}".into()));
    let mut headers = hyper::HeaderMap::new();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    for header in args {
        let (name, value) = header.split_once(':').expect("headers are NAME: VALUE");
        headers.insert(
            hyper::header::HeaderName::from_bytes(name.trim().as_bytes()).expect("a header name"),
            value.trim().parse().expect("a header value"),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (body, headers) = (body.clone(), headers.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let (body, headers) = (body.clone(), headers.clone());
                async move {
                    // Read the request body, as the host does, so both do the same work on input.
                    let _ = request.into_body().collect().await;
                    let mut response = hyper::Response::new(Full::new(body));
                    *response.headers_mut() = headers;
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
