//! Logs (`tracing`, pretty or JSON), traces (OpenTelemetry, W3C trace context, OTLP
//! export) and the Prometheus metrics recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, fmt};

/// Buckets of `match_stats_processing_latency` (seconds per batch) and
/// `match_stats_http_request_duration_seconds`.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Installs the log subscriber (`level` a tracing filter, `format` `pretty` or `json`)
/// with an OpenTelemetry layer, and the W3C trace-context propagator. Spans are exported
/// over OTLP/HTTP when `otlp_endpoint` is set; without it they still carry trace ids, so
/// a `traceparent` on an incoming event continues onto the delta it publishes. Keep the
/// returned provider alive and shut it down at exit to flush spans.
pub fn init(
    level: &str,
    format: &str,
    otlp_endpoint: Option<&str>,
    service_name: &str,
) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Spans say which service and version made them.
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let mut provider = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = otlp_endpoint {
        // As the OpenTelemetry spec says of this variable: a base URL, the signal's path
        // appended.
        let traces_url = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url)
            .build()
            .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT {endpoint:?}: {e}"))?;
        provider = provider.with_batch_exporter(exporter);
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let provider = provider.build();
    let filter = EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("LOG_LEVEL {level:?} is not a log filter: {e}"))?;
    // Colours only for a person at a terminal (never in a log file), and never with
    // NO_COLOR set.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = if format == "json" {
        fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        fmt::layer()
            .with_ansi(colour)
            .with_writer(std::io::stderr)
            .boxed()
    };
    // Logs follow LOG_LEVEL; traces take this service's spans whatever the log level.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("match-stats"))
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("match_stats", tracing::Level::INFO),
        );
    // A second call (tests start several apps in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init();
    Ok(provider)
}

/// The process-wide Prometheus recorder, installed on first use with every series'
/// description.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(crate::metrics::PROCESSING_LATENCY.into()),
                    &LATENCY_BUCKETS,
                )
                .expect("buckets are not empty")
                .set_buckets_for_metric(
                    Matcher::Full(match_stats_queries::metrics::HTTP_REQUEST_DURATION.into()),
                    &LATENCY_BUCKETS,
                )
                .expect("buckets are not empty")
                .install_recorder()
                .expect("the metrics recorder is installed once");
            crate::metrics::describe();
            handle
        })
        .clone()
}

/// W3C trace context read from NATS message headers.
struct HeaderExtractor<'a>(&'a async_nats::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// W3C trace context read from HTTP request headers.
struct HttpHeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for HttpHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Whether spans are exported (OTEL_EXPORTER_OTLP_ENDPOINT set).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A server span for an HTTP request (`tower_http::trace`), continuing the request's
/// `traceparent` when it has one. Without an exporter and without a `traceparent` there
/// is nothing to continue or send: no span (a request then costs no tracing at all).
pub fn http_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
        && !request.headers().contains_key("traceparent")
    {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "http_request",
        otel.kind = "server",
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HttpHeaderExtractor(request.headers()))
    });
    let _ = span.set_parent(parent);
    record_ids(&span);
    span
}

/// Records the response status on the request's span, and logs the request at debug.
pub fn http_response<B>(
    response: &axum::http::Response<B>,
    latency: std::time::Duration,
    span: &tracing::Span,
) {
    span.record("http.response.status_code", response.status().as_u16());
    tracing::debug!(
        status = response.status().as_u16(),
        latency_ms = latency.as_secs_f64() * 1000.0,
        "request served"
    );
}

/// W3C trace context written into NATS message headers.
struct HeaderInjector<'a>(&'a mut async_nats::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// A span for applying one event, continuing the event's `traceparent` if it has one
/// (`None` otherwise: untraced events cost nothing).
pub fn event_span(
    headers: Option<&async_nats::HeaderMap>,
    stream_sequence: u64,
) -> Option<tracing::Span> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    // A static name: `get("traceparent")` builds (and allocates) a header name per event.
    const TRACEPARENT: async_nats::header::HeaderName =
        async_nats::header::HeaderName::from_static("traceparent");
    let headers = headers.filter(|h| h.get(TRACEPARENT).is_some())?;
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let span = tracing::info_span!(
        "apply_event",
        stream_sequence,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let _ = span.set_parent(parent);
    record_ids(&span);
    Some(span)
}

/// Records a span's OpenTelemetry trace and span ids as its `trace_id` and `span_id`
/// fields: JSON logs written inside it carry them (under `span`), so a log line can be
/// found from a trace and the reverse.
fn record_ids(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", ids.trace_id().to_string());
        span.record("span_id", ids.span_id().to_string());
    }
}

/// Sets `span`'s trace context (`traceparent`) on outgoing headers.
pub fn inject(span: &tracing::Span, headers: &mut async_nats::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(headers))
    });
}
