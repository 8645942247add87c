//! Accepting connections: HTTP/1.1 through hyper with a timer, so that no client can hold the
//! server's resources for ever.
//!
//! - **Header-read timeout** (`connections.header_read_timeout`): a request's headers must
//!   arrive within it, counted from when the connection opened or the previous answer went out,
//!   so it is also how long a kept-alive connection may sit idle. Slow-header (slowloris) and
//!   idle connections are closed when it runs out (within [`crate::coarse_timer::RESOLUTION`]).
//! - **Connection limit** (`connections.max`): at most this many connections are served at
//!   once; further clients wait in the listen backlog until one closes. By default it is three
//!   quarters of the descriptor limit, which the server raises to its hard limit at start, so
//!   that the stores, the log and the database always have descriptors left.
//! - **Shutdown deadline** (`connections.shutdown_timeout`): on shutdown the listener closes,
//!   idle connections close, requests in flight may finish within the deadline, and whatever is
//!   still open then is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::coarse_timer::CoarseTimer;
use crate::settings::ConnectionSettings;

/// Descriptors kept back from the connection limit for stores, files and the log.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Raises the soft descriptor limit to the hard one where the system allows, and returns the
/// limit in force (`None` where there is none to read).
pub fn raise_descriptor_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            None
        }
    }
}

/// The connection limit for `settings` under a descriptor limit of `descriptors`.
pub fn connection_limit(settings: &ConnectionSettings, descriptors: Option<u64>) -> usize {
    if settings.max > 0 {
        return settings.max;
    }
    let available = descriptors.map_or(1024, |d| d.saturating_sub(RESERVED_DESCRIPTORS));
    usize::try_from((available * 3 / 4).max(1)).unwrap_or(usize::MAX)
}

/// Serves `app` on `listener` until `shutdown` completes, within the limits of `settings`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &ConnectionSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limit = connection_limit(settings, raise_descriptor_limit());
    tracing::debug!(limit, header_read_timeout = ?settings.header_read_timeout, "accepting connections");
    let permits = Arc::new(Semaphore::new(limit));
    let mut http = hyper::server::conn::http1::Builder::new();
    // One timer per request head, kept cheap: see `coarse_timer`.
    http.timer(CoarseTimer::new()).header_read_timeout(settings.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), service(&app));
        let conn = graceful.watch(conn);
        connections.spawn(PEER.scope(remote, async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        }));
    }
    drop(listener);
    if tokio::time::timeout(settings.shutdown_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open at the shutdown deadline (connections.shutdown_timeout) are dropped"
        );
    }
    connections.abort_all();
    Ok(())
}

tokio::task_local! {
    /// The address of the peer of the connection whose task this is.
    static PEER: SocketAddr;
}

/// The address of the peer this request came from, on a connection this module serves. A
/// task-local of the connection's task rather than a request extension (axum's `ConnectInfo`):
/// an extension is an allocation and a map insert on every request, for an address that only
/// logins and audited operations read.
pub fn peer() -> Option<SocketAddr> {
    PEER.try_with(|p| *p).ok()
}

/// One connection's service: the app, its requests' bodies boxed as axum's.
fn service(
    app: &Router,
) -> TowerToHyperService<
    impl tower::Service<
        Request<Incoming>,
        Response = axum::response::Response,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static,
> {
    TowerToHyperService::new(app.clone().map_request(|req: Request<Incoming>| req.map(Body::new)))
}

/// Accept errors are about this process or the system (out of descriptors, memory), never the
/// client: wait a moment and go on rather than spin.
async fn accept_error(e: &std::io::Error) {
    tracing::warn!(error = %e, "cannot accept a connection; retrying shortly");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
