//! The revocation feed for services (docs/API.md): what this node's replica holds, for the
//! services that verify access tokens themselves and keep a replica of their own.
//!
//! Only registered service clients may read it, with HTTP Basic (`client_id:client_secret`):
//! anonymous requests get `401`, a user's credential `403`, a wrong secret `401`; every refusal
//! is audited. It carries the deny-list (`jti` and `sid` with when they lapse) and the not-before
//! epochs of the last token lifetime (`sub` and `at`), nothing else.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use portcullis_core::ClientKind;
use portcullis_core::revocation::RevocationEvent;
use portcullis_core::revocation::{Denied, RevocationSnapshot};
use portcullis_service::{ClientAuthError, Entry, kind, outcome};
use portcullis_service::{FeedLog, LogItem, Resume};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::http::{Client, basic_credentials};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/revocations", get(snapshot)).route("/v1/revocations/stream", get(stream))
}

/// How often an idle stream carries a comment, so proxies keep it and clients know it lives.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// The challenge for service clients.
const BASIC_CHALLENGE: &str = "Basic realm=\"portcullis\", charset=\"UTF-8\"";

/// Unix seconds, with milliseconds as the fraction.
fn seconds(t: portcullis_core::Timestamp) -> f64 {
    // Millisecond timestamps fit an f64 exactly for the next 280,000 years.
    #[allow(clippy::cast_precision_loss)]
    let ms = t.unix_millis() as f64;
    ms / 1000.0
}

/// The snapshot as services read it.
fn snapshot_json(snapshot: &RevocationSnapshot, cursor: &str) -> Value {
    let denied: Vec<Value> = snapshot
        .denied
        .iter()
        .map(|(what, until)| match what {
            Denied::Token(jti) => json!({"jti": jti, "until": seconds(*until)}),
            Denied::Session(sid) => json!({"sid": sid, "until": seconds(*until)}),
        })
        .collect();
    let not_before: Vec<Value> =
        snapshot.not_before.iter().map(|(sub, at)| json!({"sub": sub.as_str(), "at": seconds(*at)})).collect();
    json!({"cursor": cursor, "denied": denied, "not_before": not_before})
}

/// Whether the request carries a user's credential (a bearer token or a session cookie).
fn has_user_credential(state: &AppState, headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).is_some() || state.cookies.session(headers).is_some()
}

fn unauthorized(detail: &str) -> Response {
    let mut res = ApiError::new(StatusCode::UNAUTHORIZED, "invalid_client").with_detail(detail).into_response();
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(BASIC_CHALLENGE));
    res
}

/// Checks the service client; the answer to send instead when it is not one. Refusals are
/// audited (the first per address and reason each minute).
async fn service_client(
    state: &AppState,
    headers: &HeaderMap,
    ip: Option<&str>,
) -> Result<portcullis_core::Client, Response> {
    let service = &state.service;
    let refuse = |outcome: &'static str, detail: &str| Entry::new(kind::FEED_ACCESS, outcome).ip(ip).detail(detail);
    match basic_credentials(headers) {
        Some(Ok((id, secret))) => match service.authenticate_client(&id, &secret, ClientKind::Service).await {
            Ok(client) => Ok(client),
            Err(ClientAuthError::Store(e)) => Err(ApiError::from(e).into_response()),
            Err(ClientAuthError::WrongKind) => {
                let entry = refuse(outcome::DENIED, "not a service client").actor(&id);
                service.audit_client_refusal(entry, ip, "wrong_kind").await;
                Err(ApiError::forbidden().with_detail("the revocation feed is for service clients").into_response())
            }
            Err(ClientAuthError::Invalid) => {
                let id = portcullis_core::ClientId::parse(&id).map(|c| c.to_string()).unwrap_or_default();
                let entry = refuse(outcome::FAILURE, "unknown client or wrong secret").actor(&id);
                service.audit_client_refusal(entry, ip, "invalid").await;
                Err(unauthorized("unknown client or wrong secret"))
            }
        },
        Some(Err(())) => {
            service
                .audit_client_refusal(refuse(outcome::FAILURE, "malformed Basic credentials"), ip, "malformed")
                .await;
            Err(unauthorized("malformed Basic credentials"))
        }
        None if has_user_credential(state, headers) => {
            service.audit_client_refusal(refuse(outcome::DENIED, "a user's credential"), ip, "user").await;
            let detail = "the revocation feed is for registered service clients (HTTP Basic), not users";
            Err(ApiError::forbidden().with_detail(detail).into_response())
        }
        None => {
            service.audit_client_refusal(refuse(outcome::DENIED, "anonymous"), ip, "anonymous").await;
            Err(unauthorized("the revocation feed needs a service client's credentials (HTTP Basic)"))
        }
    }
}

/// `GET /v1/revocations`: everything in force now.
async fn snapshot(State(state): State<AppState>, Client(client): Client, headers: HeaderMap) -> Response {
    if let Err(refusal) = service_client(&state, &headers, client.ip.as_deref()).await {
        return refusal;
    }
    crate::http::json_no_store(&current(&state).1)
}

/// What this node's replica holds now, as the feed's snapshot body, and its cursor. The cursor
/// is read first: an event logged after it is resumable from it, and every event logged before
/// it is in the replica already (the feed applies an event, then logs it).
fn current(state: &AppState) -> (String, Value) {
    let cursor = state.service.feed_log.cursor();
    let snapshot = state.service.replica.snapshot(state.service.clock.now(), state.service.access_token_horizon);
    state.metrics.feed_snapshot_served();
    let body = snapshot_json(&snapshot, &cursor);
    (cursor, body)
}

/// One revocation as the stream carries it.
fn event_json(event: &RevocationEvent) -> Value {
    match event {
        RevocationEvent::Deny { what: Denied::Token(jti), until } => {
            json!({"deny": {"jti": jti, "until": seconds(*until)}})
        }
        RevocationEvent::Deny { what: Denied::Session(sid), until } => {
            json!({"deny": {"sid": sid, "until": seconds(*until)}})
        }
        RevocationEvent::NotBefore { user, at } => json!({"not_before": {"sub": user.as_str(), "at": seconds(*at)}}),
    }
}

fn revocation_event(cursor: &str, event: &RevocationEvent) -> Event {
    Event::default().event("revocation").id(cursor).data(event_json(event).to_string())
}

/// Counts a follower while its stream lives.
struct Following(std::sync::Arc<crate::metrics::Metrics>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.feed_follower(-1);
    }
}

/// `GET /v1/revocations/stream`: Server-Sent Events. A `snapshot` event first (the body of
/// `GET /v1/revocations`), or, with a `Last-Event-ID` this node can resume from, the
/// `revocation` events missed since; then each revocation as this node hears of it, each with
/// its cursor as `id`; a heartbeat comment every few seconds. A follower that falls too far
/// behind, or a resync of the node, ends the stream: the client reconnects and resumes.
async fn stream(State(state): State<AppState>, Client(client): Client, headers: HeaderMap) -> Response {
    if let Err(refusal) = service_client(&state, &headers, client.ip.as_deref()).await {
        return refusal;
    }
    let log = &state.service.feed_log;
    // Follow first, so nothing falls between what is sent now and what comes later.
    let follower = log.follow();
    let last_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let resumed = match last_id.map(|id| (id, log.resume(id))) {
        Some((id, Resume::Events(events))) => Some((id.to_owned(), events)),
        _ => None,
    };
    let (first, sent): (Vec<Event>, u64) = match resumed {
        Some((id, events)) => {
            let through = events.last().map_or_else(|| FeedLog::seq_of(&id), |(seq, _)| *seq);
            (events.iter().map(|(seq, e)| revocation_event(&FeedLog::cursor_of(&id, *seq), e)).collect(), through)
        }
        None => {
            let (cursor, body) = current(&state);
            let event = Event::default().event("snapshot").id(&cursor).data(body.to_string());
            (vec![event], FeedLog::seq_of(&cursor))
        }
    };
    state.metrics.feed_events_sent(first.len());
    state.metrics.feed_follower(1);
    let metrics = std::sync::Arc::clone(&state.metrics);
    let following = Following(std::sync::Arc::clone(&state.metrics));
    let live = futures_util::stream::unfold((follower, following, sent), move |(mut follower, following, sent)| {
        let metrics = std::sync::Arc::clone(&metrics);
        async move {
            loop {
                match follower.recv().await {
                    Ok(LogItem::Event { seq, cursor, event }) if seq > sent => {
                        metrics.feed_events_sent(1);
                        return Some((revocation_event(&cursor, &event), (follower, following, seq)));
                    }
                    Ok(LogItem::Event { .. }) => {}
                    // A resync, or this follower fell behind: it starts over.
                    Ok(LogItem::Reset) | Err(_) => return None,
                }
            }
        }
    });
    let events = futures_util::stream::iter(first).chain(live).map(Ok::<_, Infallible>);
    let mut res = Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx would otherwise buffer the stream.
    res.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}
