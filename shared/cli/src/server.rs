//! The local HTTP server (`recs serve`): every route on one port, through the same
//! [`recs_serve::api::route`] the Lambda functions use.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use recs_serve::api::{self, ApiError};
use recs_serve::Service;

async fn answer(
    svc: Arc<Service>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let resp = match Limited::new(body, api::MAX_BODY).collect().await {
        Ok(collected) => {
            api::route(
                &svc,
                &http::Request::from_parts(parts, collected.to_bytes()),
            )
            .await
        }
        Err(_) => ApiError {
            status: http::StatusCode::PAYLOAD_TOO_LARGE,
            error_type: "invalid_input",
            detail: format!("request body over {} bytes or unreadable", api::MAX_BODY),
        }
        .into_response(),
    };
    Ok(resp.map(Full::new))
}

/// Serves connections from `listener` until `shutdown` completes, checking the
/// registry's active.json every `ACTIVE_POLL_SECONDS` in the background.
pub async fn serve(
    listener: TcpListener,
    svc: Arc<Service>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let poller = tokio::spawn(poll(svc.clone()));
    let served = accept_loop(listener, svc, shutdown).await;
    poller.abort();
    served
}

/// Polls active.json off the request path, so no request waits on the registry.
async fn poll(svc: Arc<Service>) {
    let every = svc.config.poll.max(std::time::Duration::from_millis(200));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The tick is the poll schedule (refresh_due is for Lambda, which has no timer).
        tick.tick().await;
        svc.refresh().await;
        svc.refresh_drift().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    svc: Arc<Service>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let svc = svc.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(svc.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and its address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
