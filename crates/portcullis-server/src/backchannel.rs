//! Delivers back-channel logout notices (OpenID Connect Back-Channel Logout 1.0 §2.5): each
//! `logout_token` the service queued is posted to its application's back-channel logout URI as
//! a form, with retries, several at a time, none waiting for another; a logout never waits for
//! any of them (the service's queue is bounded and never blocks).

use std::sync::Arc;
use std::time::Duration;

use portcullis_service::{LogoutNotice, Service};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Attempts per notice, and the wait before the second (doubling after).
pub const ATTEMPTS: u32 = 4;
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// How long one delivery may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries in flight at once.
pub const CONCURRENT: usize = 16;

/// The delivering task; stopped when dropped.
pub struct Delivery(Option<JoinHandle<()>>);

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

fn http_client() -> Option<reqwest::Client> {
    match reqwest::Client::builder().timeout(DELIVERY_TIMEOUT).redirect(reqwest::redirect::Policy::none()).build() {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: back-channel logout notices will not be delivered");
            None
        }
    }
}

/// Delivers what is queued now and returns when every delivery is done (with its retries): for
/// a command run beside the servers (`portcullis user logout`), which has no delivering task.
pub async fn deliver_queued(service: &Service) {
    let (Some(mut notices), Some(client)) = (service.backchannel.take_receiver(), http_client()) else { return };
    let mut deliveries = tokio::task::JoinSet::new();
    while let Ok(notice) = notices.try_recv() {
        let client = client.clone();
        deliveries.spawn(async move { deliver(&client, notice).await });
    }
    deliveries.join_all().await;
}

/// Starts delivering the service's notices (once per service: a second call delivers nothing).
pub fn start(service: &Service) -> Delivery {
    let Some(mut notices) = service.backchannel.take_receiver() else { return Delivery(None) };
    let Some(client) = http_client() else { return Delivery(None) };
    let limit = Arc::new(Semaphore::new(CONCURRENT));
    Delivery(Some(tokio::spawn(async move {
        while let Some(notice) = notices.recv().await {
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { return };
            let client = client.clone();
            tokio::spawn(async move {
                deliver(&client, notice).await;
                drop(permit);
            });
        }
    })))
}

async fn deliver(client: &reqwest::Client, notice: LogoutNotice) {
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        let sent = client.post(&notice.uri).form(&[("logout_token", notice.logout_token.as_str())]).send().await;
        match sent {
            Ok(res) if res.status().is_success() => {
                tracing::info!(client = %notice.client_id, attempt, "back-channel logout delivered");
                return;
            }
            Ok(res) => {
                tracing::info!(client = %notice.client_id, attempt, status = res.status().as_u16(), "back-channel logout refused")
            }
            Err(e) => {
                tracing::info!(client = %notice.client_id, attempt, error = %e, "back-channel logout not delivered")
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::warn!(client = %notice.client_id, uri = %notice.uri, "back-channel logout given up after {ATTEMPTS} attempts");
}
