//! What monitoring costs. On the request path: keeping a request for its monitor and handing the
//! sample over (`before` + `record`, with a request id, so its prediction is kept for a label). On the monitor thread: parsing the body and binning every
//! feature of one sample.
//!
//! cargo bench -p aifn-host --bench monitoring

use aifn_model::{Port, Signature};
use aifn_monitor::drift::{DriftMonitor, Settings};
use aifn_monitor::Value;
use aifn_tensor::{DType, Tensor, TensorData};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;

const SPEC: &str = r#"apiVersion: ai.function/v1
kind: Function
metadata: {name: churn}
spec:
  model: {id: m, runtime: onnx}
  monitoring:
    features: [avg_monthly_spend, days_since_last_purchase, support_tickets_last_30d, subscription_tier]
    bins: 10
    labels: { ttl: 1d }
  endpoints:
    - route: /v1/churn
"#;

const BODY: &str = r#"{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}"#;

fn monitoring(c: &mut Criterion) {
    let spec = aifn_spec::parse(SPEC).unwrap();
    let monitoring = spec.spec.monitoring.unwrap();
    let signature = Signature {
        inputs: vec![Port {
            name: "features".into(),
            dtype: DType::F32,
            shape: vec![-1, 6],
        }],
        outputs: vec![
            Port {
                name: "label".into(),
                dtype: DType::I64,
                shape: vec![-1],
            },
            Port {
                name: "probabilities".into(),
                dtype: DType::F32,
                shape: vec![-1, 2],
            },
        ],
    };
    let monitor = aifn_host::monitor::VersionMonitor::start(
        monitoring,
        &signature,
        None,
        None,
        None,
        "bench".into(),
    )
    .unwrap();
    let body = Bytes::from_static(BODY.as_bytes());
    let outputs = vec![
        Tensor::new("label", vec![1], TensorData::I64(vec![0])).unwrap(),
        Tensor::new("probabilities", vec![1, 2], TensorData::F32(vec![0.8, 0.2])).unwrap(),
    ];
    c.bench_function(
        "request path: keep a request and hand its sample over",
        |b| {
            b.iter(|| {
                let id = Some("r-1".into());
                if let Some(pending) = monitor.before(Some(black_box(&body)), &[], id) {
                    monitor.record(pending, Some(black_box(&outputs)));
                }
            })
        },
    );

    // The monitor thread's share: a reference of 1,000 values per feature, 10 bins.
    let names: Vec<String> = monitor.feature_names().to_vec();
    let reference: Vec<Vec<Value>> = (0..names.len())
        .map(|f| {
            (0..1000)
                .map(|i| match f {
                    3 => Value::Category(["basic", "standard", "premium"][i % 3].into()),
                    _ => Value::Number((i * (f + 1)) as f64 / 7.0),
                })
                .collect()
        })
        .collect();
    let mut drift = DriftMonitor::new(Settings::default(), names.clone(), reference);
    let mut at = Duration::ZERO;
    c.bench_function("monitor thread: parse a body and bin 7 features", |b| {
        b.iter(|| {
            let parsed: serde_json::Value =
                serde_json::from_slice(black_box(BODY.as_bytes())).unwrap();
            let mut values: Vec<Option<Value>> = [
                "avg_monthly_spend",
                "days_since_last_purchase",
                "support_tickets_last_30d",
                "subscription_tier",
            ]
            .iter()
            .map(|k| Some(Value::from_json(parsed.get(*k))))
            .collect();
            values.extend([
                Some(Value::Number(0.0)),
                Some(Value::Number(0.8)),
                Some(Value::Number(0.2)),
            ]);
            at += Duration::from_micros(10);
            drift.record(at, &values);
        })
    });
}

criterion_group!(benches, monitoring);
criterion_main!(benches);
