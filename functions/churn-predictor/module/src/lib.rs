//! Churn predictor: JSON customers in, churn probabilities out.
//!
//! preprocess: `{"avg_monthly_spend", "days_since_last_purchase", "support_tickets_last_30d",
//! "subscription_tier"}` (or `{"customers": [...]}` for a batch) → `features` f32 [N, 6]:
//! spend, days, tickets, then the tier one-hot (basic, standard, premium).
//! postprocess: `probabilities` f32 [N, 2] → `{"churn_probability", "will_churn"}` per customer.

use aifn_sdk::{output, Error, Function, Request, Response, Tensor};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

const TIERS: [&str; 3] = ["basic", "standard", "premium"];
const MAX_BATCH: usize = 1024;

/// Whether this request was a batch. Each request runs in a fresh instance, so this never leaks
/// from one request to another; it carries the request's shape from preprocess to postprocess.
static BATCH: AtomicBool = AtomicBool::new(false);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Customer {
    avg_monthly_spend: f64,
    days_since_last_purchase: f64,
    support_tickets_last_30d: f64,
    subscription_tier: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    Batch { customers: Vec<Customer> },
    One(Customer),
}

#[derive(Serialize)]
struct Prediction {
    churn_probability: f32,
    will_churn: bool,
}

fn encode(index: usize, c: &Customer, features: &mut Vec<f32>) -> Result<(), Error> {
    let at = |field: &str| {
        if BATCH.load(Ordering::Relaxed) {
            format!("customers[{index}].{field}")
        } else {
            field.to_string()
        }
    };
    for (field, value, max) in [
        ("avg_monthly_spend", c.avg_monthly_spend, 1e9),
        ("days_since_last_purchase", c.days_since_last_purchase, 36_500.0),
        ("support_tickets_last_30d", c.support_tickets_last_30d, 1e6),
    ] {
        if !(0.0..=max).contains(&value) {
            return Err(Error::bad_request(format!("{} must be between 0 and {max}, got {value}", at(field))));
        }
        features.push(value as f32);
    }
    let tier = TIERS.iter().position(|t| *t == c.subscription_tier).ok_or_else(|| {
        Error::bad_request(format!(
            "{} must be one of {}, got `{}`",
            at("subscription_tier"),
            TIERS.join(", "),
            c.subscription_tier
        ))
    })?;
    features.extend((0..TIERS.len()).map(|i| if i == tier { 1.0 } else { 0.0 }));
    Ok(())
}

struct Churn;

impl Function for Churn {
    fn preprocess(req: Request) -> Result<Vec<Tensor>, Error> {
        let body: Body = serde_json::from_slice(&req.body).map_err(|e| {
            Error::bad_request(format!(
                "expected a customer {{avg_monthly_spend, days_since_last_purchase, support_tickets_last_30d, subscription_tier}} or {{\"customers\": [...]}}: {e}"
            ))
        })?;
        let customers = match body {
            Body::One(customer) => vec![customer],
            Body::Batch { customers } => {
                BATCH.store(true, Ordering::Relaxed);
                customers
            }
        };
        if customers.is_empty() || customers.len() > MAX_BATCH {
            return Err(Error::bad_request(format!("a batch holds 1 to {MAX_BATCH} customers")));
        }
        let mut features = Vec::with_capacity(customers.len() * 6);
        for (i, customer) in customers.iter().enumerate() {
            encode(i, customer, &mut features)?;
        }
        Ok(vec![Tensor::f32("features", vec![customers.len() as u32, 6], features)])
    }

    fn postprocess(_req: Request, outputs: Vec<Tensor>) -> Result<Option<Response>, Error> {
        let probabilities = output(&outputs, "probabilities")?
            .as_f32()
            .ok_or_else(|| Error::internal("`probabilities` is not f32"))?;
        let predictions: Vec<Prediction> = probabilities
            .chunks_exact(2)
            .map(|p| Prediction {
                churn_probability: p[1],
                will_churn: p[1] >= 0.5,
            })
            .collect();
        let response = if BATCH.load(Ordering::Relaxed) {
            Response::json(&serde_json::json!({ "predictions": predictions }))?
        } else {
            Response::json(&predictions[0])?
        };
        Ok(Some(response))
    }
}

aifn_sdk::export!(Churn);
