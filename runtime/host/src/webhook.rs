//! Notifications of rollout events (an automatic rollback above all) to the webhook URL in the
//! host's configuration: a JSON POST saying what happened, why, and when, retried a few times.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

const ATTEMPTS: u32 = 4;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Notifier {
    url: Option<hyper::Uri>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Notifier {
    /// `url` must be `http://…` (the host speaks plain HTTP; put a relay in front for HTTPS).
    pub fn new(url: Option<&str>) -> anyhow::Result<Notifier> {
        let url = match url {
            Some(text) => {
                let uri: hyper::Uri = text
                    .parse()
                    .map_err(|e| anyhow::anyhow!("webhook URL `{text}`: {e}"))?;
                if uri.scheme_str() != Some("http") || uri.host().is_none() {
                    anyhow::bail!("webhook URL `{text}` must be http://HOST[:PORT]/PATH");
                }
                Some(uri)
            }
            None => None,
        };
        Ok(Notifier {
            url,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Sends `body` in the background; failures are logged, never returned.
    pub fn send(&self, body: serde_json::Value) {
        if let Some(url) = self.url.clone() {
            self.send_to(url, body);
        }
    }

    /// Sends `body` to `url` (a spec's own webhook) in the background, as [`Notifier::send`].
    pub fn send_to(&self, url: hyper::Uri, body: serde_json::Value) {
        let client = self.client.clone();
        let payload = Bytes::from(serde_json::to_vec(&body).expect("JSON values serialise"));
        tokio::spawn(async move {
            for attempt in 1..=ATTEMPTS {
                let request = hyper::Request::post(url.clone())
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .header(hyper::header::USER_AGENT, "aifn-webhook")
                    .body(Full::new(payload.clone()))
                    .expect("a valid request");
                let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await;
                let problem = match outcome {
                    Ok(Ok(response)) if response.status().is_success() => return,
                    Ok(Ok(response)) => format!("answered {}", response.status()),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer in {ATTEMPT_TIMEOUT:?}"),
                };
                tracing::warn!(%url, attempt, "webhook not delivered: {problem}");
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            tracing::error!(%url, "webhook given up after {ATTEMPTS} attempts");
        });
    }
}
