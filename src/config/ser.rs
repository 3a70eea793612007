//! `serialize_with` helpers for the model's `Serialize` (the admin API's
//! `GET /api/v1/config`): durations as humantime text, values by their `Display`
//! spelling, header edits as maps, and secrets redacted.

use http::header::{HeaderName, HeaderValue};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::Serializer;
use std::fmt::Display;
use std::time::Duration;

pub const REDACTED: &str = "<redacted>";

fn text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

pub fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&text(*d))
}

pub fn opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&text(*d)),
        None => s.serialize_none(),
    }
}

pub fn display<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub fn display_list<T: Display, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| x.to_string()))
}

/// A secret: the same placeholder whatever it holds.
pub fn redacted<T, S: Serializer>(_: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(REDACTED)
}

/// A list of secrets: how many there are, not what they are.
pub fn redacted_list<T, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for _ in v {
        seq.serialize_element(REDACTED)?;
    }
    seq.end()
}

/// `(name, value)` pairs as a `{name: value}` map.
pub fn header_values<S: Serializer>(
    v: &[(HeaderName, HeaderValue)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(v.len()))?;
    for (n, v) in v {
        map.serialize_entry(n.as_str(), v.to_str().unwrap_or(""))?;
    }
    map.end()
}

/// `(name, text)` pairs as a `{name: text}` map.
pub fn header_texts<S: Serializer>(v: &[(HeaderName, String)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(v.len()))?;
    for (n, v) in v {
        map.serialize_entry(n.as_str(), v)?;
    }
    map.end()
}

/// An inclusive status range as `"lo-hi"`.
pub fn status_range<S: Serializer>(r: &(u16, u16), s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{}-{}", r.0, r.1))
}

pub fn level<S: Serializer>(l: &log::LevelFilter, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(super::value::LogLevel::of(*l).as_str())
}

/// `discovery` as written (`{dns: {...}, docker: {...}}`), `null` when none is set.
pub fn discovery<S: Serializer>(
    d: &super::model::DiscoveryConfig,
    s: S,
) -> Result<S::Ok, S::Error> {
    if d.is_empty() {
        s.serialize_none()
    } else {
        serde::Serialize::serialize(d, s)
    }
}
