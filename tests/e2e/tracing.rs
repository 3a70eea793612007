//! SPEC §14 tracing end to end: a minimal OTLP/HTTP receiver (protobuf decoded with the
//! `opentelemetry-proto` messages) collects what Switchyard exports: one server span
//! per request with route, pool, backend, status and attempts, a child span per backend
//! attempt, W3C `traceparent`/`tracestate` continued from the client and passed to the
//! backend with the attempt's span id, parent-based sampling, and a collector that is
//! down costing no request.
use crate::common::config::*;
use crate::common::*;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The OTLP/HTTP receiver: every POST body decoded, its spans kept.
struct Collector {
    server: TcpServer,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Collector {
    fn start() -> Collector {
        let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
        let kept = spans.clone();
        let server = TcpServer::start(move |mut s| loop {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            let text = String::from_utf8_lossy(&head).to_lowercase();
            assert!(text.starts_with("post /v1/traces "), "{text}");
            assert!(
                text.contains("content-type: application/x-protobuf"),
                "{text}"
            );
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("content-length");
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).unwrap();
            let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
            for rs in req.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Any::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        kept.lock().unwrap().push((service.clone(), span));
                    }
                }
            }
            let reply = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
            if s.write_all(reply.as_bytes()).is_err() {
                return;
            }
        });
        Collector { server, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.server.address())
    }

    /// Waits (10 s at most) until `n` spans arrived.
    fn wait(&self, n: usize) -> Vec<(String, Span)> {
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            self.spans.lock().unwrap().len() >= n
        });
        self.spans.lock().unwrap().clone()
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let v = span.attributes.iter().find(|a| a.key == key)?;
    match v.value.as_ref()?.value.as_ref()? {
        Any::StringValue(s) => Some(s.clone()),
        Any::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The test configuration with listener `web`, `pool` (named `web`), route `site` to
/// it, and the `tracing` section.
fn config(web: u16, pool: &Value, tracing: Value) -> Value {
    with(
        config_of(
            json!([listener("web", web)]),
            json!([pool]),
            json!([route("site", "web")]),
        ),
        json!({ "tracing": tracing }),
    )
}

fn tracing_section(endpoint: &str, ratio: Value) -> Value {
    json!({ "otlp_endpoint": endpoint, "sample_ratio": ratio, "service_name": "edge-test" })
}

#[test]
fn a_request_makes_a_server_span_and_an_attempt_span_whose_id_reaches_the_backend() {
    let collector = Collector::start();
    let backend = Backend::start("a");
    let web = listen_port();
    let pool = pool("web", &[backend.address()]);
    let _sy = Switchyard::start_config(
        &config(
            web,
            &pool,
            tracing_section(&collector.endpoint(), json!(1.0)),
        ),
        &[web],
    );

    // A client that is part of a sampled trace, with vendor state.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = request(
        web,
        "GET",
        "/hello?x=1",
        &[("traceparent", parent), ("tracestate", "vendor=abc")],
        b"",
    );
    assert_eq!(r.status, 200);
    let seen = backend.last().unwrap();
    let sent = seen
        .header("traceparent")
        .expect("traceparent to the backend")
        .to_string();
    assert_eq!(seen.header("tracestate"), Some("vendor=abc"));

    let spans = collector.wait(2);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(spans.iter().all(|(service, _)| service == "edge-test"));
    let server = &spans
        .iter()
        .find(|(_, s)| s.kind == SpanKind::Server as i32)
        .expect("a server span")
        .1;
    let client = &spans
        .iter()
        .find(|(_, s)| s.kind == SpanKind::Client as i32)
        .expect("an attempt span")
        .1;
    assert_eq!(
        hex(&server.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "the client's trace continues"
    );
    assert_eq!(hex(&server.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(
        client.parent_span_id, server.span_id,
        "the attempt is the server span's child"
    );
    assert_eq!(
        sent,
        format!("00-{}-{}-01", hex(&client.trace_id), hex(&client.span_id)),
        "the attempt's id went to the backend"
    );
    assert_eq!(attr(server, "route").as_deref(), Some("site"));
    assert_eq!(attr(server, "pool").as_deref(), Some("web"));
    assert_eq!(attr(server, "backend"), Some(backend.address()));
    assert_eq!(attr(server, "status").as_deref(), Some("200"));
    assert_eq!(attr(server, "attempts").as_deref(), Some("1"));
    assert_eq!(attr(client, "backend"), Some(backend.address()));
    assert!(server.end_time_unix_nano >= client.end_time_unix_nano);
}

#[test]
fn a_failed_connect_is_an_attempt_span_of_its_own() {
    let collector = Collector::start();
    let backend = Backend::start("a");
    let web = listen_port();
    let dead = format!("127.0.0.1:{}", closed_port());
    let pool = with(
        pool("web", &[dead.clone(), backend.address()]),
        json!({ "retries": 1, "health_check": { "kind": "none" } }),
    );
    let _sy = Switchyard::start_config(
        &config(web, &pool, tracing_section(&collector.endpoint(), json!(1))),
        &[web],
    );
    for _ in 0..4 {
        assert_eq!(get(web, "/").status, 200);
    }
    let spans = collector.wait(4 + 6);
    let servers: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 4, "{spans:#?}");
    let retried = servers
        .iter()
        .find(|s| attr(s, "attempts").as_deref() == Some("2"))
        .unwrap_or_else(|| {
            panic!("round robin sends one of four requests to the dead backend first: {servers:#?}")
        });
    let attempts: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.parent_span_id == retried.span_id)
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let failed = attempts
        .iter()
        .find(|s| attr(s, "backend") == Some(dead.clone()))
        .expect("the dead backend's attempt");
    assert_eq!(
        failed.status.as_ref().map(|s| s.code),
        Some(2),
        "error status: {failed:?}"
    );
    assert_eq!(attr(retried, "backend"), Some(backend.address()));
}

#[test]
fn sampling_follows_the_ratio_and_a_sampled_parent_and_a_dead_collector_costs_nothing() {
    let collector = Collector::start();
    let backend = Backend::start("a");
    let web = listen_port();
    let pool = pool("web", &[backend.address()]);
    let _sy = Switchyard::start_config(
        &config(web, &pool, tracing_section(&collector.endpoint(), json!(0))),
        &[web],
    );
    for _ in 0..5 {
        assert_eq!(get(web, "/").status, 200);
    }
    // Ratio 0: no trace of our own, but the traceparent still goes on (not sampled).
    let unsampled = backend
        .last()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_string();
    assert!(unsampled.ends_with("-00"), "{unsampled}");
    let sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_eq!(
        request(web, "GET", "/", &[("traceparent", sampled)], b"").status,
        200
    );
    let spans = collector.wait(2);
    std::thread::sleep(Duration::from_millis(1500)); // one more export round
    let spans_now = collector.spans.lock().unwrap().clone();
    assert_eq!(
        spans_now.len(),
        2,
        "only the sampled parent's request: {spans:#?}"
    );
    assert!(spans_now
        .iter()
        .all(|(_, s)| hex(&s.trace_id) == "0af7651916cd43dd8448eb211c80319c"));

    // A collector that accepts nothing: requests are answered as before.
    let dead = format!("http://127.0.0.1:{}/v1/traces", closed_port());
    let web2 = listen_port();
    let sy2 = Switchyard::start_config(
        &config(web2, &pool, tracing_section(&dead, json!(1.0))),
        &[web2],
    );
    for _ in 0..50 {
        assert_eq!(get(web2, "/").status, 200);
    }
    assert!(backend
        .last()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .ends_with("-01"));
    assert_eq!(sy2.stderr_count("panicked"), 0, "{}", sy2.stderr());
}

#[test]
fn tracing_settings_are_checked() {
    let endpoint = "http://127.0.0.1:4318/v1/traces";
    for (tracing, needle) in [
        (json!({ "sample_ratio": 0.5 }), "tracing.otlp_endpoint"),
        (
            json!({ "otlp_endpoint": "localhost:4318" }),
            "tracing.otlp_endpoint",
        ),
        (
            json!({ "otlp_endpoint": endpoint, "sample_ratio": 1.5 }),
            "tracing.sample_ratio",
        ),
        (
            json!({ "otlp_endpoint": endpoint, "sampler": "always" }),
            "tracing.sampler",
        ),
    ] {
        let section = json!({ "tracing": tracing });
        let (out, _, _) = check_config(&config_text(&section));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{section}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{section}: want {needle} in {stderr}"
        );
    }
    let section = json!({ "tracing": { "otlp_endpoint": "https://otel.example.com/v1/traces" } });
    let (out, _, _) = check_config(&config_text(&section));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
