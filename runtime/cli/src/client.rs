//! The control-plane client used by every `aifn` command but `serve`, `up` and `validate`.

use crate::bundle::Bundle;
use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use std::time::Duration;

pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str, token: String) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Sends a request and returns the JSON body, turning error bodies into readable errors.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = self.url(path);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", self.auth())
            .header("x-aifn-actor", actor());
        let result = match body {
            Some(body) => self.agent.run(
                request
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body)?)?,
            ),
            None => self.agent.run(request.body(())?),
        };
        let mut response = result.with_context(|| {
            format!(
                "cannot reach the aifn host at {} (is `aifn serve` running?)",
                self.base
            )
        })?;
        let status = response.status();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or(&text);
            bail!("{method} {path} failed ({status}): {message}");
        }
        Ok(value)
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call("GET", path, None)
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call("DELETE", path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call("POST", path, Some(body))
    }

    pub fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call("PUT", path, Some(body))
    }

    /// Uploads an artifact unless the host already has it.
    pub fn upload(&self, bytes: &[u8], digest: &aifn_host::store::Digest) -> anyhow::Result<()> {
        let path = format!("/admin/v1/blobs/{digest}");
        let head = self
            .agent
            .head(self.url(&path))
            .header("authorization", self.auth())
            .call()
            .with_context(|| format!("cannot reach the aifn host at {}", self.base))?;
        if head.status() == 200 {
            return Ok(());
        }
        let mut response = self
            .agent
            .put(self.url(&path))
            .header("authorization", self.auth())
            .header("content-type", "application/octet-stream")
            .send(bytes)
            .context("uploading an artifact")?;
        if !response.status().is_success() {
            bail!(
                "uploading {digest} failed ({}): {}",
                response.status(),
                response.body_mut().read_to_string().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Uploads the bundle's artifacts, then asks the host to deploy it (`strategy`: immediate,
    /// canary or shadow; `None`: as the spec says).
    pub fn deploy(
        &self,
        bundle: &Bundle,
        strategy: Option<&str>,
        reason: Option<&str>,
    ) -> anyhow::Result<Value> {
        for artifact in bundle.artifacts() {
            self.upload(&artifact.bytes, &artifact.digest)
                .with_context(|| format!("uploading {}", artifact.path.display()))?;
        }
        self.post(
            "/admin/v1/functions",
            json!({
                "spec": bundle.spec_yaml,
                "model": bundle.model.as_ref().map(|a| a.digest.to_string()),
                "module": bundle.module.as_ref().map(|a| a.digest.to_string()),
                "fallback_model": bundle.fallback_model.as_ref().map(|a| a.digest.to_string()),
                "strategy": strategy,
                "reason": reason,
            }),
        )
    }
}

/// Who runs this command, for the host's audit log: `user@machine`.
fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if machine.is_empty() {
        user
    } else {
        format!("{user}@{machine}")
    }
}
