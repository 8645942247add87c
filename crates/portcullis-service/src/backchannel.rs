//! The queue of back-channel logout notices (OpenID Connect Back-Channel Logout 1.0): when an
//! application's session record ends, the service signs a `logout_token` for the application
//! and puts it here; the server delivers it over HTTP (this crate has no HTTP client).
//!
//! The queue is bounded and never waits: a logout puts its notices in and goes on. When the
//! queue is full (the applications' endpoints are slow or dead and deliveries pile up), the
//! notice is dropped and logged, so a dead application can never delay a logout.

use std::sync::Mutex;

use portcullis_core::ClientId;
use tokio::sync::mpsc;

/// How many notices wait for delivery at most.
pub const BACKCHANNEL_QUEUE: usize = 1024;

/// A signed `logout_token` for one application.
#[derive(Debug, Clone)]
pub struct LogoutNotice {
    pub client_id: ClientId,
    /// The application's registered back-channel logout URI.
    pub uri: String,
    pub logout_token: String,
}

/// The bounded queue; the server takes its receiving end once.
pub struct BackchannelQueue {
    sender: mpsc::Sender<LogoutNotice>,
    receiver: Mutex<Option<mpsc::Receiver<LogoutNotice>>>,
}

impl Default for BackchannelQueue {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(BACKCHANNEL_QUEUE);
        Self { sender, receiver: Mutex::new(Some(receiver)) }
    }
}

impl BackchannelQueue {
    /// Queues a notice without waiting; `false` (and a warning) when the queue is full or no
    /// one delivers.
    pub fn push(&self, notice: LogoutNotice) -> bool {
        match self.sender.try_send(notice) {
            Ok(()) => true,
            Err(e) => {
                let reason = match &e {
                    mpsc::error::TrySendError::Full(_) => "the queue is full",
                    mpsc::error::TrySendError::Closed(_) => "no one delivers notices",
                };
                tracing::warn!(client = %e.into_inner().client_id, reason, "back-channel logout notice dropped");
                false
            }
        }
    }

    /// The receiving end, for the one task that delivers; `None` once taken.
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<LogoutNotice>> {
        match self.receiver.lock() {
            Ok(mut r) => r.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}
