//! What `o2c serve` refuses whoever the caller is: a client that never finishes its
//! headers (disconnected after [`Limits::header_timeout`]), a body that does not arrive
//! within [`Limits::body_timeout`] (`408`), and a body over [`Limits::max_body`] (`413`,
//! or the key's own smaller limit) — every refusal a JSON error like the API's others,
//! answered and recorded by the gate (`auth.rs`).
//!
//! `axum::serve` gives no deadline for headers (its hyper builder has no timer), so
//! [`serve`] is its accept loop with hyper's `header_read_timeout` and the same graceful
//! shutdown.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

/// The request limits of `o2c serve`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for a request's headers, from the connection (or the previous request).
    pub header_timeout: Duration,
    /// Longest wait for a request's body once its headers arrived.
    pub body_timeout: Duration,
    /// Largest body accepted. EventBridge refuses a `PutEvents` request over 256 KB of
    /// entries; the JSON encoding of the entries (each `Detail` an escaped string) adds to
    /// that, hence the default of twice as much.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), body_timeout: Duration::from_secs(30), max_body: 512 * 1024 }
    }
}

/// A request refused before its handler ran: status, error code, reason.
pub type Refused = (StatusCode, &'static str, String);

/// Buffers the body of `req` within `max` bytes and `timeout`, or says why not
/// (`408`, `413`, `400`).
pub async fn read_body(req: Request, max: usize, timeout: Duration) -> Result<Request, Refused> {
    let declared = req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Err(_) => {
            return Err((
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                format!("the request body did not arrive within {} s", timeout.as_secs()),
            ));
        }
        Ok(Err(e)) if is_length_limit(&e) => return Err(too_large(max)),
        Ok(Err(e)) => return Err((StatusCode::BAD_REQUEST, "ValidationException", format!("cannot read the request body: {e}"))),
        Ok(Ok(b)) => b,
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn too_large(max: usize) -> Refused {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        format!("the request body exceeds {max} bytes (a PutEvents request holds at most 256 KB of entries)"),
    )
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Serves `app` until `shutdown` completes, then lets open connections finish their
/// request in flight. HTTP/1.1; a connection whose next request's headers do not arrive
/// within `limits.header_timeout` is closed.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (open_tx, open_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors and the like: the next accept may succeed.
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The client's address, for the refusals the gate records.
        let remote = stream.peer_addr().ok();
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(app.clone(), move |mut r: Request<Incoming>| {
            if let Some(addr) = remote {
                r.extensions_mut().insert(ConnectInfo(addr));
            }
            r
        }));
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(open);
        });
    }
    drop(open_rx);
    let _ = stop_tx.send(true);
    // Every connection task holds a receiver; `closed` resolves when the last one ends.
    open_tx.closed().await;
    Ok(())
}
