//! Tests of the value grammar (`value.rs`).

use super::*;

fn canon(s: &str) -> Result<String, ValueError> {
    s.parse::<BackendAddr>().map(|a| a.to_string())
}

#[test]
fn backend_addresses_are_canonical() {
    assert_eq!(canon("127.0.0.1:80").as_deref(), Ok("127.0.0.1:80"));
    assert_eq!(canon("[0:0::1]:80").as_deref(), Ok("[::1]:80"));
    assert_eq!(
        canon("Web.Internal:8080").as_deref(),
        Ok("web.internal:8080")
    );
    assert_eq!(canon("localhost:80").as_deref(), Ok("localhost:80"));
}

#[test]
fn numeric_hosts_must_be_plain_ip_literals() {
    for bad in [
        "127.000.0.1:80",
        "0127.0.0.1:80",
        "127.1:80",
        "2130706433:80",
        "0x7f.1:80",
    ] {
        let e = canon(bad).unwrap_err().to_string();
        assert!(e.contains("not a canonical IP address"), "{bad}: {e}");
    }
}

#[test]
fn malformed_host_port() {
    for bad in [
        "10.0.0.1",
        "10.0.0.1:0",
        "a b:80",
        ":80",
        "[::1:80",
        "[x]:80",
        ".a:80",
    ] {
        let e = canon(bad).unwrap_err().to_string();
        assert!(e.ends_with("is not host:port"), "{bad}: {e}");
    }
}

#[tokio::test]
async fn async_lookup_matches_the_blocking_one() {
    for s in ["127.0.0.1:9", "[::1]:9", "localhost:9"] {
        assert_eq!(lookup_backend(s).await, backend_address(s), "{s}");
    }
    assert!(lookup_backend("127.000.0.1:9").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_resolve_is_safe_on_a_worker() {
    assert!(backend_address("localhost:9").is_ok());
}

#[tokio::test(flavor = "current_thread")]
async fn blocking_resolve_is_safe_on_a_current_thread_runtime() {
    assert!(backend_address("localhost:9").is_ok());
}

#[test]
fn keys_round_trip_through_their_spelling() {
    for s in ["client_ip", "uri", "path", "header:x-user", "cookie:sid"] {
        assert_eq!(
            s.parse::<HashKey>().map(|k| k.to_string()).as_deref(),
            Ok(s)
        );
    }
    for s in ["client_ip", "route", "header:x-key"] {
        assert_eq!(
            s.parse::<RateLimitKey>().map(|k| k.to_string()).as_deref(),
            Ok(s)
        );
    }
    assert!("cookie:".parse::<HashKey>().is_err());
    assert!("header:a b".parse::<RateLimitKey>().is_err());
}

#[test]
fn literals_resolve_without_dns() {
    let a: BackendAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(a.resolve(), Ok(SocketAddr::from(([127, 0, 0, 1], 9))));
}

#[test]
fn durations_need_a_unit() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration("fast"), None);
}

#[test]
fn host_port_forms() {
    assert!(backend_address("127.0.0.1:80").is_ok());
    assert!(backend_address("[::1]:80").is_ok());
    assert!(backend_address("127.0.0.1").is_err());
    assert!(backend_address("127.000.0.1:80").is_err());
}

#[test]
fn status_ranges() {
    assert_eq!(parse_status_range("200"), Some((200, 200)));
    assert_eq!(parse_status_range("200-399"), Some((200, 399)));
    assert_eq!(parse_status_range("399-200"), None);
    assert_eq!(parse_status_range("99"), None);
}

#[test]
fn prefixes_are_segment_normalized() {
    assert_eq!(normalize_prefix("/v1/"), "/v1");
    assert_eq!(normalize_prefix("/"), "/");
}
