//! `engine run --metrics-address HOST:PORT`: the Prometheus text format at `/metrics`, liveness
//! at `/health` and readiness at `/ready` (see [`engine_runtime::health`]). The runtime and the
//! connectors count through the `metrics` facade; this installs the Prometheus recorder
//! (metrics-exporter-prometheus) and serves what it renders over a plain HTTP/1 server (hyper).
//! Every series carries the `pipeline` label. docs/monitoring.md lists them.

use bytes::Bytes;
use engine_api::{EngineError, Result};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Buckets of `engine_epoch_commit_seconds`, in seconds.
const COMMIT_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the recorder and starts serving at `address`. Fails, in one line naming it, when the
/// address does not parse or is in use.
pub async fn start(address: &str, pipeline: &str) -> Result<SocketAddr> {
    let addr = resolve(address)?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => "is already in use".to_string(),
            std::io::ErrorKind::PermissionDenied => "is not allowed (a port below 1024?)".into(),
            _ => format!("cannot be listened on ({e})"),
        };
        EngineError::config(format!(
            "metrics address {addr} {why}; pick another with --metrics-address or ENGINE_METRICS_ADDRESS"
        ))
    })?;
    let handle = PrometheusBuilder::new()
        .add_global_label("pipeline", pipeline)
        .set_buckets_for_metric(
            Matcher::Full("engine_epoch_commit_seconds".into()),
            &COMMIT_BUCKETS,
        )
        .map_err(|e| EngineError::runtime(format!("metrics: {e}")))?
        .install_recorder()
        .map_err(|e| EngineError::runtime(format!("cannot install the metrics recorder: {e}")))?;
    metrics::gauge!("engine_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let r = respond(&req, &handle);
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    tracing::info!(address = %addr, "serving metrics at /metrics, liveness at /health, readiness at /ready");
    Ok(addr)
}

/// `HOST:PORT`, the host a name or an address.
fn resolve(address: &str) -> Result<SocketAddr> {
    let bad = || {
        EngineError::config(format!(
            "metrics address `{address}` is not HOST:PORT (for example 127.0.0.1:9100 or 0.0.0.0:9100)"
        ))
    };
    address
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

fn respond<B>(req: &Request<B>, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        "/health" => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/ready" if engine_runtime::health::health().ready() => {
            (StatusCode::OK, "text/plain", "ready\n".into())
        }
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: no epoch committed yet, or stopping\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /health or /ready\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_that_is_not_host_port_is_one_line_naming_it() {
        let e = resolve("9100").unwrap_err();
        assert!(e.to_string().contains("`9100` is not HOST:PORT"), "{e}");
        assert_eq!(resolve("127.0.0.1:9100").unwrap().port(), 9100);
    }

    #[tokio::test]
    async fn an_address_in_use_is_one_line_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = start(&addr, "t").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "metrics address {addr} is already in use; pick another with --metrics-address or ENGINE_METRICS_ADDRESS"
            )
        );
    }
}
