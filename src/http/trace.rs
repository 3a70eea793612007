//! One request's trace (SPEC §14): a server span continuing the client's W3C
//! `traceparent`/`tracestate`, a client span per backend attempt whose context goes to
//! the backend in `traceparent`/`tracestate`, and the attributes route, pool, backend,
//! status and attempts. Every function is a no-op without a trace (tracing off).

use super::ctx::RequestCtx;
use crate::observe::tracing::tracer;
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::Span;
use pingora::http::RequestHeader;

pub struct RequestTrace {
    /// Holds the server span.
    cx: Context,
    attempt: Option<Span>,
    attempts: u32,
    method: String,
}

/// The request's trace, when tracing is on.
pub fn start(req: &RequestHeader) -> Option<Box<RequestTrace>> {
    let tracer = tracer()?;
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(&req.headers));
    let span = tracer
        .span_builder(req.method.to_string())
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", req.method.to_string()),
            KeyValue::new("url.path", req.uri.path().to_string()),
        ])
        .start_with_context(tracer, &parent);
    Some(Box::new(RequestTrace {
        cx: parent.with_span(span),
        attempt: None,
        attempts: 0,
        method: req.method.to_string(),
    }))
}

/// A backend was chosen: a new attempt span (the previous one ends).
pub fn attempt(trace: &mut Option<Box<RequestTrace>>, backend: &str) {
    let (Some(t), Some(tracer)) = (trace.as_mut(), tracer()) else {
        return;
    };
    if let Some(mut old) = t.attempt.take() {
        old.end();
    }
    t.attempts += 1;
    let span = tracer
        .span_builder("upstream")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("backend", backend.to_string()),
            KeyValue::new("attempt", i64::from(t.attempts)),
        ])
        .start_with_context(tracer, &t.cx);
    t.attempt = Some(span);
}

/// Connecting to the attempt's backend failed.
pub fn attempt_failed(trace: &mut Option<Box<RequestTrace>>, error: &pingora::Error) {
    if let Some(mut span) = trace.as_mut().and_then(|t| t.attempt.take()) {
        span.set_status(Status::error(error.etype().as_str().to_string()));
        span.end();
    }
}

/// The backend answered with `status`.
pub fn attempt_answered(trace: &mut Option<Box<RequestTrace>>, status: u16) {
    if let Some(span) = trace.as_mut().and_then(|t| t.attempt.as_mut()) {
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(format!("status {status}")));
        }
    }
}

struct Collect(Vec<(&'static str, String)>);

impl Injector for Collect {
    fn set(&mut self, key: &str, value: String) {
        // The propagator sets only these two.
        let key = if key == "tracestate" {
            "tracestate"
        } else {
            "traceparent"
        };
        self.0.push((key, value));
    }
}

/// `traceparent`/`tracestate` of the current attempt on the request to the backend
/// (replacing the client's).
pub fn inject(trace: &Option<Box<RequestTrace>>, req: &mut RequestHeader) -> pingora::Result<()> {
    let Some(t) = trace else {
        return Ok(());
    };
    let cx = match &t.attempt {
        Some(span) => Context::new().with_remote_span_context(span.span_context().clone()),
        None => t.cx.clone(),
    };
    let mut headers = Collect(Vec::new());
    TraceContextPropagator::new().inject_context(&cx, &mut headers);
    req.remove_header("traceparent");
    req.remove_header("tracestate");
    for (name, value) in headers.0 {
        req.insert_header(name, value)?;
    }
    Ok(())
}

/// The request is done: the server span gets its attributes and ends.
pub fn finish(ctx: &mut RequestCtx, status: u16) {
    let Some(mut t) = ctx.trace.take() else {
        return;
    };
    if let Some(mut span) = t.attempt.take() {
        span.end();
    }
    let backend = ctx.upstream.backend().map(|b| b.address.clone());
    let span = t.cx.span();
    span.set_attributes([
        KeyValue::new(
            "route",
            ctx.route().map(|r| r.name.clone()).unwrap_or_default(),
        ),
        KeyValue::new(
            "pool",
            ctx.pool().map(|p| p.name.clone()).unwrap_or_default(),
        ),
        KeyValue::new("backend", backend.unwrap_or_default()),
        KeyValue::new("status", i64::from(status)),
        KeyValue::new("http.response.status_code", i64::from(status)),
        KeyValue::new("attempts", i64::from(t.attempts)),
    ]);
    if let Some(route) = ctx.route() {
        span.update_name(format!("{} {}", t.method, route.name));
    }
    if status >= 500 || status == 0 {
        span.set_status(Status::error(format!("status {status}")));
    }
    span.end();
}
