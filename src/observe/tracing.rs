//! OpenTelemetry tracing (`tracing`, SPEC §14): the tracer provider with parent-based
//! ratio sampling, the SDK's batch processor (its own thread, a bounded queue: a full
//! queue drops spans, never blocks a request) and the OTLP/HTTP protobuf exporter,
//! whose requests run on a small runtime of their own. Built on first use, so its
//! threads exist in the daemonised process; with no `tracing` section nothing is built
//! and the request path pays one atomic load.

use crate::config::TracingConfig;
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use once_cell::sync::OnceCell;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use std::time::Duration;

pub use opentelemetry_sdk::trace::Tracer;

/// Spans waiting for export; past this the batch processor drops new ones.
const QUEUE: usize = 8192;
const BATCH: usize = 512;
const EXPORT_EVERY: Duration = Duration::from_millis(500);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

static SETTINGS: OnceCell<TracingConfig> = OnceCell::new();
static TRACING: OnceCell<Option<Tracing>> = OnceCell::new();

struct Tracing {
    /// Owns the batch processor's thread for the life of the process.
    _provider: SdkTracerProvider,
    tracer: Tracer,
}

#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("cannot start the span exporter's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot load the system trust store for {0}: {1}")]
    Trust(String, std::io::Error),
}

/// Sets the process's tracing settings (at start; a reload cannot change them).
pub fn configure(cfg: Option<&TracingConfig>) {
    if let Some(cfg) = cfg {
        let _ = SETTINGS.set(cfg.clone());
    }
}

/// The tracer, or None when tracing is off (or could not start: logged once).
pub fn tracer() -> Option<&'static Tracer> {
    let cfg = SETTINGS.get()?;
    TRACING
        .get_or_init(|| match build(cfg) {
            Ok(t) => {
                log::info!(
                    "tracing: spans to {} (sample ratio {})",
                    cfg.otlp_endpoint,
                    cfg.sample_ratio.as_f64()
                );
                Some(t)
            }
            Err(e) => {
                log::error!("tracing is off: {e}");
                None
            }
        })
        .as_ref()
        .map(|t| &t.tracer)
}

fn build(cfg: &TracingConfig) -> Result<Tracing, TracingError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(ExportClient::new(&cfg.otlp_endpoint)?)
        .with_endpoint(cfg.otlp_endpoint.clone())
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(QUEUE)
        .with_max_export_batch_size(BATCH)
        .with_scheduled_delay(EXPORT_EVERY)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        cfg.sample_ratio.as_f64(),
    )));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_resource(
            Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("switchyard");
    Ok(Tracing {
        _provider: provider,
        tracer,
    })
}

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The exporter's HTTP client: hyper on a one-thread runtime of its own, because the
/// batch processor polls exports from a plain thread.
#[derive(Debug)]
struct ExportClient {
    runtime: tokio::runtime::Runtime,
    client: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
}

impl ExportClient {
    fn new(endpoint: &str) -> Result<Self, TracingError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(TracingError::Runtime)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| TracingError::Trust(endpoint.to_string(), e))?
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        Ok(ExportClient { runtime, client })
    }
}

#[async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(body));
        let exchange = self.runtime.spawn(async move {
            let response = tokio::time::timeout(EXPORT_TIMEOUT, client.request(request))
                .await
                .map_err(|_| HttpError::from("the collector did not answer in time"))??;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, 1 << 20).collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        });
        exchange.await?
    }
}
