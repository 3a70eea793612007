//! `tracing` (SPEC §14): the OTLP/HTTP endpoint, the sampling ratio and the service name.

use super::*;

pub(super) fn read_tracing(d: &mut Decoder, node: &Node) -> Option<TracingConfig> {
    let mut m = d.map(node, "tracing")?;
    d.spans.set("tracing", m.pos);
    let endpoint = required(d, &mut m, "otlp_endpoint", |d, n, p| {
        d.parse(
            n,
            p,
            "an http:// or https:// URL such as http://127.0.0.1:4318/v1/traces",
            |s| {
                url::Url::parse(s)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .map(|_| s.to_string())
            },
        )
    });
    let sample_ratio = get_with(d, &mut m, "sample_ratio", |d, n, p| {
        d.parse(n, p, "a number from 0 to 1", |s| {
            s.parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .map(|r| Ratio((r * 1_000_000.0).round() as u32))
        })
    })
    .unwrap_or(Ratio(1_000_000));
    let service_name = opt_string(d, &mut m, "service_name").unwrap_or_else(|| "switchyard".into());
    if service_name.is_empty() {
        d.error(
            m.key_pos("service_name"),
            "tracing.service_name",
            "must not be empty",
        );
    }
    m.finish(d, |_| None);
    Some(TracingConfig {
        otlp_endpoint: endpoint?,
        sample_ratio,
        service_name,
    })
}
