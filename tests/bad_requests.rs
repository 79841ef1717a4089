//! Bad requests as data: every `tests/bad_requests/*.http` holds the exact bytes of one raw
//! HTTP/1.1 exchange (CRLF line endings, a few `{{...}}` macros for bytes too many or too odd to
//! write) under a small header that says what the host must answer (see
//! `tests/bad_requests/README.md`).
//!
//! One real host serves the bundled text-embedder (v2 INT64 inputs, batching with zero padding)
//! and the churn predictor; each case goes over its own raw `TcpStream`, and its answers are read
//! with a deadline. A caller's mistake is never a 5xx: what the host answers itself is a 4xx with a
//! JSON `{"error":{"code","message"}}`; what hyper answers (framing, request line, header limits)
//! is a bare status, or the connection closed. After the whole table the host still gives correct
//! answers.

use crate::support;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

/// The host's header read timeout (`--header-timeout-ms`): the slow-client case dribbles slower.
const HEADER_TIMEOUT_MS: &str = "1000";

/// How long a case waits for all its answers unless it says `wait:`.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// `STATUS CODE` for an error: a JSON body whose `error.code` is CODE; for a 2xx, a JSON body
    /// with a top-level field CODE. `STATUS` alone: that status, whatever the body.
    Answer { status: u16, code: Option<String> },
    /// The connection ends (EOF or reset) with nothing (more) sent.
    Closed,
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Answer { status, code: None } => write!(f, "{status}"),
            Expect::Answer {
                status,
                code: Some(code),
            } => write!(f, "{status} {code}"),
            Expect::Closed => write!(f, "closed"),
        }
    }
}

#[derive(Debug)]
struct Case {
    name: String,
    expects: Vec<Expect>,
    /// Write one byte per `pace` instead of all at once.
    pace: Option<Duration>,
    /// Shut down the writing half this long after the last byte (a client that stops sending).
    close_write: Option<Duration>,
    wait: Duration,
    bytes: Vec<u8>,
}

fn cases_dir() -> PathBuf {
    repo().join("tests/bad_requests")
}

fn load_cases() -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "http"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| parse_case(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

fn parse_case(path: &Path) -> Result<Case, String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let split = find(&text, b"\r\n===\r\n")
        .map(|i| (i, i + 7))
        .or_else(|| text.starts_with(b"===\r\n").then_some((0, 5)))
        .ok_or("no `===` line (CRLF) between the expectations and the request")?;
    let head = std::str::from_utf8(&text[..split.0]).map_err(|_| "the header is not UTF-8")?;
    let raw = &text[split.1..];
    let mut case = Case {
        name: path.file_stem().unwrap().to_string_lossy().into_owned(),
        expects: Vec::new(),
        pace: None,
        close_write: None,
        wait: DEFAULT_WAIT,
        bytes: Vec::new(),
    };
    let mut about = false;
    let mut bare_lf = false;
    for line in head.split("\r\n") {
        let (key, value) = line
            .split_once(':')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| format!("header line `{line}` is not `key: value`"))?;
        match key {
            "about" => about = !value.is_empty(),
            "expect" => case.expects.push(parse_expect(value)?),
            "pace" => case.pace = Some(parse_ms(value)?),
            "wait" => case.wait = parse_ms(value)?,
            "close-write" => case.close_write = Some(parse_ms(value)?),
            "bare-lf" => bare_lf = value == "yes",
            other => return Err(format!("unknown header key `{other}`")),
        }
    }
    if !about {
        return Err("no `about:` line".into());
    }
    if case.expects.is_empty() {
        return Err("no `expect:` line".into());
    }
    if !bare_lf {
        if let Some(i) =
            (0..raw.len()).find(|&i| raw[i] == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
        {
            return Err(format!(
                "bare LF at byte {i} of the request (CRLF line endings; `bare-lf: yes` if meant)"
            ));
        }
    }
    for expect in &case.expects {
        if let Expect::Answer { status, code } = expect {
            if *status >= 500 {
                return Err(format!(
                    "expects {status}: a caller's mistake is never a 5xx"
                ));
            }
            if (200..300).contains(status) && code.is_none() {
                return Err("a 2xx expectation names a field its JSON body must have".into());
            }
        }
    }
    case.bytes = expand(raw)?;
    Ok(case)
}

fn parse_expect(value: &str) -> Result<Expect, String> {
    if value == "closed" {
        return Ok(Expect::Closed);
    }
    let mut words = value.split_whitespace();
    let status = words
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| format!("`expect: {value}`: not `closed` or `STATUS [CODE]`"))?;
    let code = words.next().map(str::to_string);
    if words.next().is_some() {
        return Err(format!("`expect: {value}`: more than `STATUS [CODE]`"));
    }
    Ok(Expect::Answer { status, code })
}

fn parse_ms(value: &str) -> Result<Duration, String> {
    value
        .strip_suffix("ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{value}` is not a duration in ms (`250ms`)"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Expands the macros of a request:
/// `{{repeat N TEXT}}` (TEXT, which may span lines, N times), `{{bytes HH HH ..}}` (raw bytes in
/// hex), `{{length}}` (the byte length of the body of the message it is in: what follows that
/// message's blank line, up to `{{next}}` or the end of the file) and `{{next}}` (where the next
/// pipelined message starts; nothing is sent for it).
fn expand(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut messages = Vec::new();
    let mut out = Vec::new();
    let mut lengths = Vec::new();
    let mut rest = raw;
    loop {
        let Some(start) = find(rest, b"{{") else {
            out.extend_from_slice(rest);
            break;
        };
        out.extend_from_slice(&rest[..start]);
        let after = &rest[start + 2..];
        let end = find(after, b"}}").ok_or("`{{` without `}}`")?;
        let inner = std::str::from_utf8(&after[..end]).map_err(|_| "a macro is not UTF-8")?;
        rest = &after[end + 2..];
        let (word, argument) = inner.split_once(' ').unwrap_or((inner, ""));
        match word {
            "repeat" => {
                let (count, text) = argument
                    .split_once(' ')
                    .ok_or("`{{repeat N TEXT}}` needs N and TEXT")?;
                let count: usize = count.parse().map_err(|_| format!("bad count `{count}`"))?;
                out.extend_from_slice(&text.as_bytes().repeat(count));
            }
            "bytes" => {
                for hex in argument.split_whitespace() {
                    out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad byte `{hex}`"))?);
                }
            }
            "length" => lengths.push(out.len()),
            "next" => {
                messages.push(fill_lengths(std::mem::take(&mut out), &lengths)?);
                lengths.clear();
            }
            other => return Err(format!("unknown macro `{{{{{other}}}}}`")),
        }
    }
    messages.push(fill_lengths(out, &lengths)?);
    Ok(messages.concat())
}

/// Writes the body's length at each `{{length}}` position of one message.
fn fill_lengths(mut message: Vec<u8>, positions: &[usize]) -> Result<Vec<u8>, String> {
    if positions.is_empty() {
        return Ok(message);
    }
    let blank =
        find(&message, b"\r\n\r\n").ok_or("`{{length}}` in a message without a blank line")?;
    if positions.iter().any(|&p| p > blank) {
        return Err("`{{length}}` after the message's blank line".into());
    }
    let length = (message.len() - blank - 4).to_string();
    for &p in positions.iter().rev() {
        message.splice(p..p, length.bytes());
    }
    Ok(message)
}

/// What came back for one expected answer.
#[derive(Debug)]
enum Got {
    Answer {
        status: u16,
        body: Vec<u8>,
        /// `X-Aifn-Error`: the code of a `/v2` error, whose body is the protocol's
        /// `{"error": "<message>"}`.
        error_header: Option<String>,
    },
    /// EOF or reset, after `bytes` of an unfinished answer.
    Closed { bytes: Vec<u8> },
    /// The deadline passed with the connection open.
    Silent { bytes: Vec<u8> },
    /// Not an HTTP/1.x response.
    Garbage { bytes: Vec<u8> },
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let excerpt = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            text.chars().take(300).collect::<String>()
        };
        match self {
            Got::Answer {
                status,
                body,
                error_header,
            } => match serde_json::from_slice::<Value>(body) {
                Ok(json) if json["error"]["code"].is_string() => {
                    write!(
                        f,
                        "{status} {} ({})",
                        json["error"]["code"].as_str().unwrap(),
                        excerpt(body)
                    )
                }
                Ok(json) if json["error"].is_string() => write!(
                    f,
                    "{status} {} ({})",
                    error_header.as_deref().unwrap_or("(no x-aifn-error)"),
                    excerpt(body)
                ),
                _ if body.is_empty() => write!(f, "{status} (no body)"),
                _ => write!(f, "{status} ({})", excerpt(body)),
            },
            Got::Closed { bytes } if bytes.is_empty() => write!(f, "closed"),
            Got::Closed { bytes } => write!(f, "closed mid-answer after {:?}", excerpt(bytes)),
            Got::Silent { bytes } => {
                write!(f, "no answer within the deadline ({:?})", excerpt(bytes))
            }
            Got::Garbage { bytes } => write!(f, "not an HTTP response: {:?}", excerpt(bytes)),
        }
    }
}

/// Reads HTTP/1.1 responses off a stream, each by a deadline.
struct Responses {
    stream: TcpStream,
    buffer: Vec<u8>,
    ended: bool,
}

impl Responses {
    /// Reads more bytes; false at EOF, reset or the deadline (`self.ended` tells which).
    fn fill(&mut self, deadline: Instant) -> bool {
        if self.ended {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        self.stream
            .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
            .unwrap();
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.ended = true;
                false
            }
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
            Err(_) => {
                self.ended = true;
                false
            }
        }
    }

    fn stopped(&mut self) -> Got {
        let bytes = std::mem::take(&mut self.buffer);
        if self.ended {
            Got::Closed { bytes }
        } else {
            Got::Silent { bytes }
        }
    }

    fn next(&mut self, deadline: Instant) -> Got {
        // The head.
        let head_end = loop {
            if let Some(i) = find(&self.buffer, b"\r\n\r\n") {
                break i;
            }
            if !self.fill(deadline) {
                return self.stopped();
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .filter(|l| l.starts_with("HTTP/1."))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse::<u16>().ok());
        let Some(status) = status else {
            return Got::Garbage {
                bytes: std::mem::take(&mut self.buffer),
            };
        };
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
        let start = head_end + 4;
        let body = if chunked {
            let mut body = Vec::new();
            let mut at = start;
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buffer[at..], b"\r\n") {
                        break at + i;
                    }
                    if !self.fill(deadline) {
                        return self.stopped();
                    }
                };
                let line = String::from_utf8_lossy(&self.buffer[at..line_end]).into_owned();
                let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                else {
                    return Got::Garbage {
                        bytes: std::mem::take(&mut self.buffer),
                    };
                };
                let data = line_end + 2;
                if size == 0 {
                    // No trailers from this host: the final CRLF.
                    while self.buffer.len() < data + 2 {
                        if !self.fill(deadline) {
                            return self.stopped();
                        }
                    }
                    at = data + 2;
                    break;
                }
                while self.buffer.len() < data + size + 2 {
                    if !self.fill(deadline) {
                        return self.stopped();
                    }
                }
                body.extend_from_slice(&self.buffer[data..data + size]);
                at = data + size + 2;
            }
            self.buffer.drain(..at);
            body
        } else if let Some(length) = length {
            while self.buffer.len() < start + length {
                if !self.fill(deadline) {
                    return self.stopped();
                }
            }
            let body = self.buffer[start..start + length].to_vec();
            self.buffer.drain(..start + length);
            body
        } else {
            // Neither: the body runs to the end of the connection.
            while self.fill(deadline) {}
            if !self.ended {
                return self.stopped();
            }
            let body = self.buffer[start..].to_vec();
            self.buffer.clear();
            body
        };
        Got::Answer {
            status,
            body,
            error_header: header("x-aifn-error"),
        }
    }

    /// Whether the connection ends with nothing more sent, by the deadline.
    fn closed(&mut self, deadline: Instant) -> Got {
        while self.buffer.is_empty() && self.fill(deadline) {}
        if !self.buffer.is_empty() {
            // Something more came: read it as an answer if it is one.
            return self.next(deadline);
        }
        self.stopped()
    }
}

/// Sends a case and reads as many answers as it expects (or the connection's end).
fn exchange(address: &str, case: &Case) -> Vec<Got> {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let bytes = case.bytes.clone();
    let (pace, close_write) = (case.pace, case.close_write);
    // Written from its own thread: the host may answer (and close) before a large body is sent.
    let sending = std::thread::spawn(move || {
        let sent = match pace {
            Some(pace) => bytes.iter().try_for_each(|b| {
                writer.write_all(std::slice::from_ref(b))?;
                std::thread::sleep(pace);
                Ok::<_, std::io::Error>(())
            }),
            None => writer.write_all(&bytes),
        };
        if let (Ok(()), Some(after)) = (sent, close_write) {
            std::thread::sleep(after);
            let _ = writer.shutdown(Shutdown::Write);
        }
    });
    let deadline = Instant::now() + case.wait;
    let mut responses = Responses {
        stream,
        buffer: Vec::new(),
        ended: false,
    };
    let mut got = Vec::new();
    for expect in &case.expects {
        let answer = match expect {
            Expect::Closed => responses.closed(deadline),
            Expect::Answer { .. } => responses.next(deadline),
        };
        let stop = !matches!(answer, Got::Answer { .. });
        got.push(answer);
        if stop {
            break;
        }
    }
    let _ = responses.stream.shutdown(Shutdown::Both);
    sending.join().unwrap();
    got
}

/// Why an answer is not the one expected, if it is not.
fn mismatch(expect: &Expect, got: Option<&Got>) -> Option<String> {
    let Some(got) = got else {
        return Some("nothing (the exchange stopped earlier)".into());
    };
    match (expect, got) {
        (Expect::Closed, Got::Closed { bytes }) if bytes.is_empty() => None,
        (
            Expect::Answer { status, code },
            Got::Answer {
                status: actual,
                body,
                error_header,
            },
        ) => {
            if actual != status {
                return Some(got.to_string());
            }
            let code = code.as_ref()?;
            let Ok(json) = serde_json::from_slice::<Value>(body) else {
                return Some(format!("{got}: the body is not JSON"));
            };
            if (200..300).contains(status) {
                return json
                    .get(code)
                    .is_none()
                    .then(|| format!("{got}: no field `{code}`"));
            }
            let error = &json["error"];
            // The Open Inference Protocol's shape on `/v2`: the message is the error, the code
            // is in a header.
            let (actual_code, message) = match error.as_str() {
                Some(message) => (error_header.as_deref(), message),
                None => (
                    error["code"].as_str(),
                    error["message"].as_str().unwrap_or_default(),
                ),
            };
            if actual_code != Some(code.as_str()) {
                return Some(got.to_string());
            }
            message
                .is_empty()
                .then(|| format!("{got}: no error message"))
        }
        _ => Some(got.to_string()),
    }
}

/// `GET /healthz` on a fresh connection: whether the host still answers.
fn alive(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: aifn\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut responses = Responses {
        stream,
        buffer: Vec::new(),
        ended: false,
    };
    matches!(
        responses.next(Instant::now() + Duration::from_secs(10)),
        Got::Answer { status: 200, .. }
    )
}

#[test]
fn every_bad_request_gets_its_status_and_error_code() {
    let cases = load_cases();
    assert!(
        cases.len() >= 45,
        "expected the table of bad requests in {} ({} cases)",
        cases_dir().display(),
        cases.len()
    );

    let state = temp_dir("bad-requests");
    let host = TestHost::start_with(&state, &["--header-timeout-ms", HEADER_TIMEOUT_MS]);
    // Their specs open v2 (`spec.v2`), bounded by `max_shape`.
    for name in ["text-embedder", "churn-predictor"] {
        host.deploy(&bundled_spec(name, &state, &format!("{name}.yaml"), &[]));
    }
    let address = host.base.trim_start_matches("http://").to_string();

    let mut failures = Vec::new();
    for case in &cases {
        let got = exchange(&address, case);
        let mut wrong = Vec::new();
        for (i, expect) in case.expects.iter().enumerate() {
            if let Some(why) = mismatch(expect, got.get(i)) {
                wrong.push(format!("answer {}: expected {expect}, got {why}", i + 1));
            }
        }
        let shown: Vec<String> = got.iter().map(ToString::to_string).collect();
        println!("{:<40} {}", case.name, shown.join(" | "));
        if !wrong.is_empty() {
            failures.push(format!("{}: {}", case.name, wrong.join("; ")));
        }
        if !alive(&address) {
            failures.push(format!(
                "{}: the host stopped answering after it",
                case.name
            ));
            break;
        }
    }
    let report = format!(
        "{} of {} bad requests were answered wrongly:\n{}\n(the host's log: {})",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        state.with_extension("log").display()
    );
    if !failures.is_empty() {
        eprintln!("{report}");
    }
    // After the whole table (shown above when it failed), the host still answers correctly.
    answers_correctly(&host);
    assert!(failures.is_empty(), "{report}");
}

/// A valid request to each route the table hit, and the right answer to it.
fn answers_correctly(host: &TestHost) {
    // The embedding of a reference text ...
    let reference = reference();
    let case = &reference[0];
    let reply = host.post(
        "/v1/embeddings",
        &json!({ "inputs": case.text }).to_string(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let cos = cosine(&floats(&reply.json()["embedding"]), &case.embedding);
    assert!(cos >= 0.9999, "cosine {cos} for {:?}", case.text);

    // ... the same through v2 (mean pooling of the model's last hidden state) ...
    let n = case.ids.len();
    let tensor = |name: &str, data: Vec<i64>| {
        let shape = [1, n];
        json!({ "name": name, "shape": shape, "datatype": "INT64", "data": data })
    };
    let body = json!({ "inputs": [
        tensor("input_ids", case.ids.clone()),
        tensor("attention_mask", vec![1; n]),
        tensor("token_type_ids", vec![0; n]),
    ]});
    let reply = host.post("/v2/models/text-embedder/infer", &body.to_string());
    assert_eq!(reply.status, 200, "{}", reply.body);
    let output = &reply.json()["outputs"][0];
    assert_eq!(output["shape"], json!([1, n, 384]), "{output}");
    let hidden = floats(&output["data"]);
    let pooled: Vec<f32> = (0..384)
        .map(|d| (0..n).map(|t| hidden[t * 384 + d]).sum::<f32>() / n as f32)
        .collect();
    let cos = cosine(&pooled, &case.embedding);
    assert!(cos >= 0.9999, "v2: cosine {cos} for {:?}", case.text);

    // ... and the churn predictor's probability for the features Python gave it.
    let expected: Value = serde_json::from_slice(
        &std::fs::read(repo().join("functions/churn-predictor/model/expected.json")).unwrap(),
    )
    .unwrap();
    let first = &expected["cases"][0];
    let body = json!({ "inputs": [{
        "name": "features", "shape": [1, 6], "datatype": "FP32", "data": first["features"],
    }]});
    let reply = host.post("/v2/models/churn-predictor/infer", &body.to_string());
    assert_eq!(reply.status, 200, "{}", reply.body);
    let outputs = reply.json()["outputs"].clone();
    let probabilities = outputs
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap_or_else(|| panic!("no probabilities in {outputs}"));
    let churn = probabilities["data"][1].as_f64().unwrap();
    let want = first["churn_probability"].as_f64().unwrap();
    assert!(
        (churn - want).abs() < 1e-5,
        "churn probability {churn}, expected {want}"
    );
}

#[test]
fn the_case_format_expands_as_documented() {
    let raw = concat!(
        "POST /a HTTP/1.1\r\nContent-Length: {{length}}\r\n\r\n",
        "{{repeat 3 [}}{{bytes ff 00}}{{next}}GET / HTTP/1.1\r\n\r\n"
    );
    assert_eq!(
        expand(raw.as_bytes()).unwrap(),
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\n[[[\xff\x00GET / HTTP/1.1\r\n\r\n"
    );
    assert_eq!(
        parse_expect("400 invalid_input").unwrap(),
        Expect::Answer {
            status: 400,
            code: Some("invalid_input".into())
        }
    );
    assert_eq!(parse_expect("closed").unwrap(), Expect::Closed);
    assert!(parse_expect("4xx").is_err());
}
