//! Unit tests of `http::admission`.

use super::*;
use crate::config::parse_str;
use crate::ops::shutdown::WorkCount;
use crate::state::store::StateStore;

const YAML: &str = "
listeners: [{name: web, listen: '127.0.0.1:8080'}]
server: {deny: ['10.9.0.0/16'], trusted_proxies: ['127.0.0.0/8']}
pools:
  - name: p
    backends: [{address: '127.0.0.1:9001'}]
routes:
  - {name: acl, path_prefix: /acl, allow: ['192.168.0.0/16'], pool: p}
  - {name: limited, path_prefix: /limited, rate_limit: {rate: 1, burst: 1, key: route}, pool: p}
  - {name: secure, path_prefix: /secure, redirect_https: true}
  - {name: app, host: app.example.com, pool: p}
";

fn runtime() -> Runtime {
    let loaded = match parse_str("test.yaml", YAML, &|_| None, false) {
        Ok(l) => l,
        Err(e) => panic!("test config invalid: {e:?}"),
    };
    let state = match StateStore::open(None) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    Runtime::build(&loaded.config, None, &state)
}

fn header(path: &str, host: &str, extra: &[(&'static str, &str)]) -> RequestHeader {
    let mut h = match RequestHeader::build("GET", path.as_bytes(), None) {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    };
    let mut set = |name: &'static str, value: &str| {
        if let Err(e) = h.insert_header(name, value) {
            panic!("{e}");
        }
    };
    set("host", host);
    for (n, v) in extra {
        set(n, v);
    }
    h
}

fn run(
    rt: &Runtime,
    header: &RequestHeader,
    peer: [u8; 4],
    tls: bool,
    refused: Option<u16>,
) -> (Verdict, RequestCtx) {
    let mut ctx = RequestCtx::new(WorkCount::default().start());
    let req = Request {
        header,
        peer: Some(IpAddr::from(peer)),
        listener: 0,
        tls,
        refused,
        challenges: None,
        header_bytes: 0,
    };
    let verdict = futures_lite(admit(&req, rt, &mut ctx));
    (verdict, ctx)
}

/// Admission only awaits the (local) rate limiter, so a current-thread runtime will do.
fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => panic!("{e}"),
    }
}

const CLIENT: [u8; 4] = [192, 168, 1, 1];

#[test]
fn a_routed_request_is_proxied_and_recorded() {
    let rt = runtime();
    let (v, ctx) = run(
        &rt,
        &header("/", "app.example.com", &[]),
        CLIENT,
        false,
        None,
    );
    assert_eq!(v, Verdict::Proxy);
    assert!(ctx.route.is_some() && ctx.pool.is_some());
    assert_eq!(ctx.client_ip, Some(IpAddr::from(CLIENT)));
    assert_eq!(ctx.request_id.len(), 32, "a new id is 32 hex characters");
}

#[test]
fn a_valid_client_request_id_is_kept_and_an_invalid_one_replaced() {
    let rt = runtime();
    let h = header("/", "app.example.com", &[("x-request-id", "abc-123")]);
    assert_eq!(run(&rt, &h, CLIENT, false, None).1.request_id, "abc-123");
    let h = header("/", "app.example.com", &[("x-request-id", "a b")]);
    assert_ne!(run(&rt, &h, CLIENT, false, None).1.request_id, "a b");
}

#[test]
fn the_guard_answers_first_and_closes() {
    let rt = runtime();
    let h = header("/", "app.example.com", &[]);
    let (v, ctx) = run(&rt, &h, CLIENT, false, Some(431));
    assert_eq!(v, Verdict::Answer(Answer::Close(431)));
    assert!(!ctx.request_id.is_empty(), "the answer still carries an id");
    assert!(ctx.route.is_none());
}

#[test]
fn a_pending_acme_token_is_answered_before_deny_and_routing() {
    let rt = runtime();
    let challenges = Challenges::default();
    challenges.publish("tok", "tok.thumb");
    let h = header("/.well-known/acme-challenge/tok", "unrouted.test", &[]);
    let mut ctx = RequestCtx::new(WorkCount::default().start());
    let req = Request {
        header: &h,
        // A denied client: the CA connects from anywhere.
        peer: Some(IpAddr::from([10, 9, 1, 1])),
        listener: 0,
        tls: false,
        refused: None,
        challenges: Some(&challenges),
        header_bytes: 0,
    };
    let verdict = futures_lite(admit(&req, &rt, &mut ctx));
    assert_eq!(verdict, Verdict::Answer(Answer::Text("tok.thumb".into())));
    // Without the table (a TLS listener) the path is routed like any other: 403 here.
    let (v, _) = run(&rt, &h, [10, 9, 1, 1], true, None);
    assert_eq!(v, Verdict::Answer(Answer::Status(403)));
}

#[test]
fn server_deny_answers_403_before_routing() {
    let rt = runtime();
    let h = header("/", "app.example.com", &[]);
    let (v, ctx) = run(&rt, &h, [10, 9, 1, 1], false, None);
    assert_eq!(v, Verdict::Answer(Answer::Status(403)));
    assert!(ctx.route.is_none());
}

#[test]
fn deny_applies_to_the_client_ip_behind_a_trusted_proxy() {
    let rt = runtime();
    let h = header("/", "app.example.com", &[("x-forwarded-for", "10.9.2.2")]);
    let (v, ctx) = run(&rt, &h, [127, 0, 0, 1], false, None);
    assert_eq!(ctx.client_ip, Some(IpAddr::from([10, 9, 2, 2])));
    assert_eq!(v, Verdict::Answer(Answer::Status(403)));
}

#[test]
fn no_route_answers_404() {
    let rt = runtime();
    let h = header("/", "other.example.com", &[]);
    assert_eq!(
        run(&rt, &h, CLIENT, false, None).0,
        Verdict::Answer(Answer::Status(404))
    );
}

#[test]
fn the_route_acl_answers_403() {
    let rt = runtime();
    let h = header("/acl", "x", &[]);
    assert_eq!(run(&rt, &h, CLIENT, false, None).0, Verdict::Proxy);
    let (v, ctx) = run(&rt, &h, [172, 16, 0, 1], false, None);
    assert_eq!(v, Verdict::Answer(Answer::Status(403)));
    assert!(ctx.route.is_some(), "the route is known for the access log");
}

#[test]
fn the_rate_limit_answers_429_with_retry_after() {
    let rt = runtime();
    let h = header("/limited", "x", &[]);
    assert_eq!(run(&rt, &h, CLIENT, false, None).0, Verdict::Proxy);
    match run(&rt, &h, CLIENT, false, None).0 {
        Verdict::Answer(Answer::TooMany { retry_after }) => assert!(retry_after >= 1),
        other => panic!("expected 429, got {other:?}"),
    }
}

#[test]
fn redirect_https_on_plain_http_and_404_without_a_pool_on_tls() {
    let rt = runtime();
    let h = header("/secure/a?b=1", "app.example.com", &[]);
    assert_eq!(
        run(&rt, &h, CLIENT, false, None).0,
        Verdict::Answer(Answer::Redirect(
            "https://app.example.com/secure/a?b=1".into()
        ))
    );
    assert_eq!(
        run(&rt, &h, CLIENT, true, None).0,
        Verdict::Answer(Answer::Status(404))
    );
}

fn normalized(target: &str) -> (Option<u16>, RequestHeader, RequestCtx) {
    let mut h = header(target, "app.example.com", &[]);
    let mut ctx = RequestCtx::new(WorkCount::default().start());
    (normalize_target(&mut h, &mut ctx), h, ctx)
}

#[test]
fn the_path_is_normalised_in_place_with_the_query_kept() {
    let (refused, h, ctx) = normalized("/a/./b/../%63?x=%2e%2e&y=//");
    assert_eq!(refused, None);
    assert_eq!(
        h.uri.path_and_query().map(|p| p.as_str()),
        Some("/a/c?x=%2e%2e&y=//")
    );
    assert_eq!(h.raw_path(), b"/a/c?x=%2e%2e&y=//");
    assert_eq!(
        ctx.original_target.as_deref(),
        Some("/a/./b/../%63?x=%2e%2e&y=//")
    );
}

#[test]
fn a_normal_path_is_left_alone() {
    let (refused, h, ctx) = normalized("/a/c?q=1");
    assert_eq!(refused, None);
    assert_eq!(h.raw_path(), b"/a/c?q=1");
    assert!(ctx.original_target.is_none());
}

#[test]
fn an_absolute_form_target_keeps_its_authority() {
    let (refused, h, _) = normalized("http://app.example.com/x/../flag?q");
    assert_eq!(refused, None);
    assert_eq!(h.uri.path(), "/flag");
    assert_eq!(h.raw_path(), b"http://app.example.com/flag?q");
}

#[test]
fn a_refused_path_is_400_and_reaches_no_route() {
    let rt = runtime();
    for target in ["/acl%2fx", "/acl%5C", "/acl%00"] {
        let (refused, h, _) = normalized(target);
        assert_eq!(refused, Some(400), "{target}");
        let (v, ctx) = run(&rt, &h, CLIENT, false, refused);
        assert_eq!(v, Verdict::Answer(Answer::Close(400)));
        assert!(ctx.route.is_none());
    }
}

#[test]
fn an_acl_sees_the_normalised_path() {
    let rt = runtime();
    let (_, h, _) = normalized("/x/%2e%2e/%61cl");
    let (v, ctx) = run(&rt, &h, [172, 16, 0, 1], false, None);
    assert_eq!(v, Verdict::Answer(Answer::Status(403)));
    assert_eq!(ctx.route.map(|r| rt.routes[r].name.as_str()), Some("acl"));
}

#[test]
fn https_location_drops_the_http_port_and_names_a_non_default_one() {
    let h = header("/p", "app.example.com:8080", &[]);
    assert_eq!(https_location(&h, 8443), "https://app.example.com:8443/p");
    assert_eq!(https_location(&h, 443), "https://app.example.com/p");
}
