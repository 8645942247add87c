//! Running a server inside another program: tests, and services that embed Portcullis.

use std::sync::Arc;

use portcullis_core::Clock;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::settings::Settings;
use crate::state::AppState;
use crate::{Server, StartError};

/// A server running on a Tokio task; stopped when [`Running::stop`] is called or it is dropped.
pub struct Running {
    /// `http://<address>`.
    pub base: String,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts a server on `127.0.0.1:0` (whatever `settings.listen` says).
pub async fn spawn(settings: Settings, clock: Arc<dyn Clock>) -> Result<Running, StartError> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr, source })?;
    spawn_on(settings, clock, listener).await
}

/// Starts a server on a listener bound beforehand (when something must know the port first).
pub async fn spawn_on(
    settings: Settings,
    clock: Arc<dyn Clock>,
    listener: tokio::net::TcpListener,
) -> Result<Running, StartError> {
    let addr = settings.listen;
    let server = Server::with_listener(settings, clock, listener).await?;
    let base = format!("http://{}", server.local_addr().map_err(|source| StartError::Listen { addr, source })?);
    let state = server.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Ok(Running { base, state, stop: Some(stop), task: Some(task) })
}

impl Running {
    /// Stops accepting, finishes requests in flight, and waits for the server to end.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
