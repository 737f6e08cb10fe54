//! HTTP load for the benchmarks: clients sending requests for a while, and the rate and
//! latency of the responses they wanted.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Concurrent clients (connections) of the REST load.
pub const CONNECTIONS: usize = 64;

/// What the clients saw.
pub struct RestResult {
    /// Wanted responses per second.
    pub requests_per_second: f64,
    /// Median latency of the wanted ones.
    pub p50_ms: f64,
    /// Their 99th percentile.
    pub p99_ms: f64,
    /// Requests that failed or answered otherwise.
    pub errors: u64,
}

/// [`CONNECTIONS`] clients, each alternating GETs of `urls`, for `seconds`; a 2xx is
/// wanted.
pub async fn hammer(urls: Vec<String>, seconds: u64) -> RestResult {
    load(
        CONNECTIONS,
        seconds,
        move |client, i| client.get(&urls[i % urls.len()]),
        |status| status.is_success(),
    )
    .await
}

/// `connections` clients for `seconds`, client `c` sending `request(client, c)`,
/// `request(client, c + 1)`... one after the other; a response whose status `wanted`
/// accepts is timed (up to 10 minutes), anything else counted as an error.
pub async fn load<R, W>(connections: usize, seconds: u64, request: R, wanted: W) -> RestResult
where
    R: Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Clone + Send + 'static,
    W: Fn(reqwest::StatusCode) -> bool + Clone + Send + 'static,
{
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, request, wanted) = (client.clone(), request.clone(), wanted.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut errors = 0u64;
            let mut i = c;
            while Instant::now() < deadline {
                let started = Instant::now();
                match request(&client, i).send().await {
                    Ok(r) if wanted(r.status()) => {
                        let _ = r.bytes().await;
                        h.saturating_record(started.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
                i += 1;
            }
            (h, errors)
        }));
    }
    let mut all = histogram();
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await.expect("client task");
        all.add(h).expect("same bounds");
        errors += e;
    }
    RestResult {
        requests_per_second: all.len() as f64 / seconds as f64,
        p50_ms: all.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
        errors,
    }
}

/// Latencies in microseconds, up to 10 minutes.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}
