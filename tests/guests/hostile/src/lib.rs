//! Misbehaves on request, so tests can check the host contains it. The request body says how:
//! `loop` spins forever, `trap` panics, `oom` allocates until refused, `big` answers with 8 MiB;
//! `env`, `var` (GREETING), `fs`, `read:PATH`, `net:HOST:PORT`, `clock` and `state` probe what the
//! sandbox lets through and answer with what they found; anything else gives the churn model a valid
//! `features` tensor.

use aifn_sdk::{Error, Function, Request, Response, Tensor};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};

struct Hostile;

/// Requests this instance has seen: always 1 when every request gets a fresh instance.
static CALLS: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// What a probe found, answered by postprocess (the same instance serves both for a request).
    static FOUND: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn features() -> Vec<Tensor> {
    vec![Tensor::f32("features", vec![1, 6], vec![42.5, 12.0, 1.0, 0.0, 0.0, 1.0])]
}

/// A probe's finding as a JSON string value.
fn quoted(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

fn probe(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let found = match text {
        "env" => {
            let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            format!("{{\"vars\":{},\"args\":{}}}", vars.len(), std::env::args().count())
        }
        "fs" => {
            let attempts = ["/", "/etc/hostname", ".", "/proc/self/environ"].map(|path| {
                match std::fs::read(path).map(|_| ()).or_else(|_| std::fs::read_dir(path).map(|_| ())) {
                    Ok(()) => format!("{}:opened", quoted(path)),
                    Err(e) => format!("{}:{}", quoted(path), quoted(&e.to_string())),
                }
            });
            format!("{{{}}}", attempts.join(","))
        }
        "clock" => {
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("{{\"unix_seconds\":{since_epoch}}}")
        }
        "state" => format!("{{\"calls\":{}}}", CALLS.load(Ordering::Relaxed)),
        other if other.starts_with("read:") => match std::fs::read_to_string(&other[5..]) {
            Ok(text) => format!("{{\"read\":{}}}", quoted(&text)),
            Err(e) => format!("{{\"error\":{}}}", quoted(&e.to_string())),
        },
        "var" => format!(
            "{{\"greeting\":{}}}",
            quoted(&std::env::var("GREETING").unwrap_or_default())
        ),
        other => {
            let address = other.strip_prefix("net:")?;
            match std::net::TcpStream::connect(address) {
                Ok(_) => "{\"connected\":true}".to_string(),
                Err(e) => format!("{{\"connected\":false,\"error\":{}}}", quoted(&e.to_string())),
            }
        }
    };
    Some(found)
}

impl Function for Hostile {
    fn preprocess(req: Request) -> Result<Vec<Tensor>, Error> {
        CALLS.fetch_add(1, Ordering::Relaxed);
        match req.body.as_slice() {
            b"loop" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            b"trap" => panic!("the hostile module panicked on purpose"),
            b"oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            b"big" => {
                FOUND.with(|f| *f.borrow_mut() = Some("big".into()));
                Ok(features())
            }
            body => {
                let found = probe(body);
                FOUND.with(|f| *f.borrow_mut() = found);
                Ok(features())
            }
        }
    }

    fn postprocess(_req: Request, _outputs: Vec<Tensor>) -> Result<Option<Response>, Error> {
        let found = FOUND.with(|f| f.borrow_mut().take());
        Ok(found.map(|found| {
            let body = if found == "big" {
                vec![b'x'; 8 << 20]
            } else {
                found.into_bytes()
            };
            Response {
                status: 200,
                content_type: "application/json".into(),
                body,
            }
        }))
    }
}

aifn_sdk::export!(Hostile);
