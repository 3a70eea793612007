//! The properties the fuzz targets in `fuzz/` check, one function per target, so the
//! committed corpus also runs as a plain regression test (tests/e2e/fuzz_corpus.rs)
//! without libFuzzer. Each panics when its property fails.

use crate::admin::api::Reply;
use crate::admin::backends_api::{add_body, patch_body, weight_field};
use crate::pool::db_checks::{mysql_greeting, parse_mysql_exchange, parse_pg_answer};

/// YAML text → what `switchyard -t` decides: an accepted config serialises (the admin
/// API's view), a refused one has at least one diagnostic.
pub fn config_load(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `${NAME}` resolves for some names, not others: both paths run.
    let env = |name: &str| (name.len() % 2 == 0).then(|| format!("v-{name}"));
    match crate::config::parse_str("fuzz.yaml", text, &env, false) {
        Ok(loaded) => {
            let json = serde_json::to_value(&loaded.config);
            assert!(
                json.is_ok(),
                "an accepted config does not serialise: {json:?}"
            );
            for w in &loaded.warnings {
                let _ = w.to_string();
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "rejected without a diagnostic");
            for e in &errors {
                let _ = e.to_string();
            }
        }
    }
}

fn check_refusal(r: &Reply) {
    assert_eq!(r.status.as_u16(), 400);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    assert!(v["error"].is_string() && v["field"].is_string(), "{v}");
}

/// Admin API request bodies (add a backend, patch a backend): a 400 JSON refusal naming
/// the field, or values within range.
pub fn admin_body(data: &[u8]) {
    match add_body(data) {
        Ok((_address, v)) => match weight_field(&v) {
            Ok(w) => assert!(w.is_none_or(|w| (1..=1000).contains(&w))),
            Err(r) => check_refusal(&r),
        },
        Err(r) => check_refusal(&r),
    }
    match patch_body(data) {
        Ok((weight, draining)) => {
            assert!(weight.is_some() || draining.is_some());
            assert!(weight.is_none_or(|w| (1..=1000).contains(&w)));
        }
        Err(r) => check_refusal(&r),
    }
}

/// A PostgreSQL server's answer to the health check: a configured user only ever makes
/// the check stricter.
pub fn pg_greeting(data: &[u8]) {
    let with_user = parse_pg_answer(data, true);
    let without = parse_pg_answer(data, false);
    assert!(!(with_user.is_ok() && without.is_err()));
}

/// A MySQL/MariaDB greeting and answer: the same rule.
pub fn mysql_exchange(data: &[u8]) {
    let _ = mysql_greeting(data);
    let with_user = parse_mysql_exchange(data, Some("health"));
    let without = parse_mysql_exchange(data, None);
    assert!(!(with_user.is_ok() && without.is_err()));
}

/// A request path: the normal form is a fixed point, has no empty, `.` or `..`
/// segments, and an absolute path stays absolute.
pub fn path_normalize(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normal) = crate::http::path::normalize(path) else {
        return;
    };
    let again = crate::http::path::normalize(&normal);
    assert!(
        again.as_deref().is_ok_and(|a| a == normal),
        "not idempotent: {path:?} -> {normal:?} -> {again:?}"
    );
    if path.starts_with('/') {
        assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
        let inner = normal.trim_end_matches('/');
        assert!(
            inner
                .split('/')
                .skip(1)
                .all(|seg| !seg.is_empty() && seg != "." && seg != ".."),
            "{path:?} -> {normal:?}"
        );
    }
}

/// The first bytes of a connection through the PROXY header reader: every step asks for
/// more bytes or ends, and a header that names addresses encodes back to the same ones.
pub fn proxy_header(data: &[u8]) {
    use crate::config::ProxyProtocolSend;
    use crate::edge::proxy_header::{step, Header, Step};
    use crate::pool::proxy_out::encode;
    let mut have = 0;
    for _ in 0..4096 {
        match step(&data[..have]) {
            Ok(Step::Need(n)) => {
                assert!(n > 0, "a step that asks for nothing");
                have += n;
                if have > data.len() {
                    return;
                }
            }
            Ok(Step::Done(Header::Proxied {
                source,
                destination,
            })) => {
                for send in [ProxyProtocolSend::V1, ProxyProtocolSend::V2] {
                    let bytes = encode(send, Some((source, destination))).unwrap_or_default();
                    let mut n = 0;
                    let parsed = loop {
                        match step(&bytes[..n.min(bytes.len())]) {
                            Ok(Step::Need(k)) if n + k <= bytes.len() => n += k,
                            other => break other,
                        }
                    };
                    assert!(
                        matches!(parsed, Ok(Step::Done(Header::Proxied { .. }))),
                        "{send:?} of {source} -> {destination} does not parse back: {parsed:?}"
                    );
                }
                return;
            }
            Ok(Step::Done(Header::Local)) | Err(_) => return,
        }
    }
    panic!("the reader never finished");
}

/// A raw HTTP/1 header section through the framing guard: refused or accepted, never a
/// panic.
pub fn request_guard(data: &[u8]) {
    let _ = crate::http::guard::check_raw(data);
}

/// The target named `name` (as in `fuzz/fuzz_targets/`).
pub fn target(name: &str) -> Option<fn(&[u8])> {
    match name {
        "config_load" => Some(config_load),
        "admin_body" => Some(admin_body),
        "pg_greeting" => Some(pg_greeting),
        "mysql_greeting" => Some(mysql_exchange),
        "path_normalize" => Some(path_normalize),
        "proxy_header" => Some(proxy_header),
        "request_guard" => Some(request_guard),
        _ => None,
    }
}
