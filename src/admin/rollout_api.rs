//! The rollout endpoints of the admin API: `POST/GET/DELETE /api/v1/pools/{pool}/rollout`
//! (request checks and JSON shapes; `rollout` runs them).

use super::api::{bad_field, error, json_reply, Api, Reply};
use super::rollout::{Plan, StartError};
use crate::config::value::lookup_backend;
use http::StatusCode;
use serde_json::Value;

/// A plan's fields, checked (its addresses are resolved afterwards).
fn plan_body(body: &[u8]) -> Result<Plan, Reply> {
    let example =
        r#"{"backends":[{"address":"10.0.0.5:8080","weight":1}],"batch":1,"interval":"30s"}"#;
    let v = super::api::json_body(body, &["backends", "batch", "interval"], example)?;
    let Some(list) = v
        .get("backends")
        .and_then(|b| b.as_array())
        .filter(|l| !l.is_empty())
    else {
        return Err(bad_field(
            "backends",
            "required: a non-empty list of {\"address\",\"weight\"}",
        ));
    };
    let mut backends = Vec::new();
    for b in list {
        let Some(address) = b.get("address").and_then(|a| a.as_str()) else {
            return Err(bad_field(
                "backends",
                "every entry needs an \"address\": \"host:port\"",
            ));
        };
        let weight = match b.get("weight") {
            None => 1,
            Some(w) => match w.as_u64() {
                Some(w @ 1..=1000) => w as u32,
                _ => {
                    return Err(bad_field(
                        "backends",
                        "weight must be a whole number from 1 to 1000",
                    ))
                }
            },
        };
        backends.push((address.to_string(), weight));
    }
    let batch = match v.get("batch") {
        None => 1,
        Some(b) => match b.as_u64() {
            Some(b @ 1..=1000) => b as usize,
            _ => return Err(bad_field("batch", "must be a whole number from 1 to 1000")),
        },
    };
    let interval = match v.get("interval") {
        None => std::time::Duration::from_secs(30),
        Some(Value::String(s)) => match humantime::parse_duration(s) {
            Ok(d) if d <= std::time::Duration::from_secs(86_400) => d,
            _ => {
                return Err(bad_field(
                    "interval",
                    "must be a duration such as 30s, at most 24h",
                ))
            }
        },
        Some(_) => return Err(bad_field("interval", "must be a duration such as \"30s\"")),
    };
    Ok(Plan {
        backends,
        batch,
        interval,
    })
}

fn progress_reply(status: StatusCode, p: &super::rollout::Progress) -> Reply {
    json_reply(status, serde_json::to_value(p).unwrap_or(Value::Null))
}

impl Api {
    pub(super) async fn start_rollout(&self, pool_name: &str, body: &[u8]) -> Reply {
        let Some(pool) = self.pool(pool_name) else {
            return error(StatusCode::NOT_FOUND, "no such pool");
        };
        let Plan {
            backends: wanted,
            batch,
            interval,
        } = match plan_body(body) {
            Ok(plan) => plan,
            Err(reply) => return reply,
        };
        let mut backends: Vec<(String, u32)> = Vec::new();
        for (address, weight) in wanted {
            let Ok((address, _)) = lookup_backend(&address).await else {
                return bad_field(
                    "backends",
                    &format!("{address} is not a resolvable host:port"),
                );
            };
            if !backends.iter().any(|(a, _)| *a == address) {
                backends.push((address, weight));
            }
        }
        let plan = Plan {
            backends,
            batch,
            interval,
        };
        match self
            .rollouts
            .start(&pool, plan, self.runtime.clone(), self.state.clone())
        {
            Ok(p) => progress_reply(StatusCode::ACCEPTED, &p),
            Err(StartError::Running) => {
                error(StatusCode::CONFLICT, "a rollout of this pool is running")
            }
            Err(StartError::NothingToDo) => {
                bad_field("backends", "these are the pool's backends already")
            }
        }
    }

    pub(super) fn rollout_progress(&self, pool_name: &str) -> Reply {
        let Some(pool) = self.pool(pool_name) else {
            return error(StatusCode::NOT_FOUND, "no such pool");
        };
        match self.rollouts.progress(&pool.name) {
            Some(p) => progress_reply(StatusCode::OK, &p),
            None => error(StatusCode::NOT_FOUND, "no rollout of this pool"),
        }
    }

    pub(super) fn stop_rollout(&self, pool_name: &str) -> Reply {
        let Some(pool) = self.pool(pool_name) else {
            return error(StatusCode::NOT_FOUND, "no such pool");
        };
        match self.rollouts.stop(&pool.name, &self.state, &self.runtime) {
            Some(p) => progress_reply(StatusCode::OK, &p),
            None => error(StatusCode::NOT_FOUND, "no rollout of this pool"),
        }
    }
}
