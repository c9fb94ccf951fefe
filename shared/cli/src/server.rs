//! The local HTTP server (`recs serve`): every route on one port, the same
//! [`recs_serve::api::app`] the Lambda functions run, served by `axum::serve`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use recs_serve::api::{self, Endpoint};
use recs_serve::Service;

/// Serves connections from `listener` until `shutdown` completes, checking the
/// registry's active.json every `ACTIVE_POLL_SECONDS` in the background.
pub async fn serve(
    listener: TcpListener,
    svc: Arc<Service>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let poller = tokio::spawn(poll(svc.clone()));
    let app = api::app(svc, &Endpoint::ALL);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
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

/// Binds `addr` (port 0 picks a free port) and returns the listener and its address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
