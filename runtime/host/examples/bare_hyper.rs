//! Baseline for `bench/cache_hit.sh`: a bare hyper server answering every request with fixed bytes,
//! on the same runtime settings as the host. Prints `listening on http://ADDR`.
//!
//! cargo run --release -p aifn-host --example bare_hyper -- BODY

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let body = Bytes::from(std::env::args().nth(1).unwrap_or_else(|| "{}".into()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    // Read the request body, as the host does, so both do the same work on input.
                    let _ = request.into_body().collect().await;
                    let mut response = hyper::Response::new(Full::new(body));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        "application/json".parse().unwrap(),
                    );
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
