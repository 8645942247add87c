//! Following Portcullis' revocation feed (`GET /v1/revocations/stream`), so a service refuses a
//! logged-out token within milliseconds while still verifying alone: a snapshot at start, then
//! each revocation as it happens, into a replica that every verification consults in memory.
//!
//! The stream is read on a task of its own. When it ends or fails, the task reconnects with
//! back-off (100 ms doubling to 5 s), naming the last event it saw (`Last-Event-ID`), so it gets
//! what it missed, or a fresh snapshot. While the feed is lost, [`FeedLoss`] decides: accept
//! tokens for at most a staleness bound, then refuse them (the default), or keep accepting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use portcullis_token::clock::{Clock, Timestamp};
use portcullis_token::jwt::AccessClaims;
use serde_json::Value;

/// What a following verifier does while it cannot hear the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedLoss {
    /// Go on accepting tokens for at most this long after the feed was lost (or, before it was
    /// first heard, after the verifier was built), then refuse every token until it is back.
    RefuseAfter(Duration),
    /// Go on accepting tokens, revoked ones included, until the feed is back.
    KeepAccepting,
}

/// The default staleness bound while the feed is lost.
pub const DEFAULT_STALENESS: Duration = Duration::from_secs(30);

/// The longest event accepted from the stream (a snapshot of a very busy deployment).
pub const MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;

/// How long the stream may stay silent before it is taken for lost: Portcullis sends a
/// heartbeat every 5 s, so this is four missed heartbeats (a connection that died without a
/// word, behind a partition, is noticed too).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(20);

/// The feed's state, for a service's health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedState {
    /// Whether the stream is connected and has delivered its snapshot.
    pub connected: bool,
    /// How long since the stream last said anything (an event or a heartbeat).
    pub last_event_age: Option<Duration>,
    /// How long the feed has been lost, while it is.
    pub lost_for: Option<Duration>,
    /// From a sign-out everywhere (the epoch's time) to this verifier applying it, for the last
    /// one heard: the revocation lag a service can export.
    pub last_lag: Option<Duration>,
}

#[derive(Default)]
struct Replica {
    tokens: HashMap<String, Timestamp>,
    sessions: HashMap<String, Timestamp>,
    not_before: HashMap<String, Timestamp>,
}

struct Status {
    connected: bool,
    last_heard: Option<Timestamp>,
    lost_since: Timestamp,
    last_event_id: Option<String>,
    last_lag: Option<Duration>,
}

/// The replica and the stream's state, shared by the verifier and its feed task.
pub(crate) struct Follower {
    replica: RwLock<Replica>,
    status: Mutex<Status>,
    loss: FeedLoss,
    clock: Arc<dyn Clock>,
}

fn seconds(v: &Value) -> Option<Timestamp> {
    let s = v.as_f64()?;
    // Unix seconds with milliseconds as the fraction; a value that is not a time is skipped.
    #[allow(clippy::cast_possible_truncation)]
    let ms = (s * 1000.0).round() as i64;
    (s.is_finite() && s >= 0.0).then(|| Timestamp::from_unix_millis(ms))
}

impl Follower {
    pub(crate) fn new(loss: FeedLoss, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        let status =
            Status { connected: false, last_heard: None, lost_since: now, last_event_id: None, last_lag: None };
        Self { replica: RwLock::new(Replica::default()), status: Mutex::new(status), loss, clock }
    }

    /// Whether tokens may be accepted now, as far as the feed goes.
    pub(crate) fn usable(&self) -> bool {
        let Ok(s) = self.status.lock() else { return false };
        match self.loss {
            _ if s.connected => true,
            FeedLoss::KeepAccepting => true,
            FeedLoss::RefuseAfter(bound) => self.clock.now().since(s.lost_since) <= bound,
        }
    }

    /// Whether a verified token has been revoked. Fails closed if the replica is unreadable.
    pub(crate) fn is_revoked(&self, claims: &AccessClaims) -> bool {
        let Ok(r) = self.replica.read() else { return true };
        let now = self.clock.now();
        let live = |until: &Timestamp| now < *until;
        r.tokens.get(&claims.jti).is_some_and(live)
            || r.sessions.get(&claims.sid).is_some_and(live)
            || r.not_before.get(&claims.sub).is_some_and(|nb| claims.issued_at() < *nb)
    }

    pub(crate) fn state(&self) -> FeedState {
        let now = self.clock.now();
        let Ok(s) = self.status.lock() else {
            return FeedState { connected: false, last_event_age: None, lost_for: None, last_lag: None };
        };
        FeedState {
            connected: s.connected,
            last_event_age: s.last_heard.map(|t| now.since(t)),
            lost_for: (!s.connected).then(|| now.since(s.lost_since)),
            last_lag: s.last_lag,
        }
    }

    fn heard(&self) {
        if let Ok(mut s) = self.status.lock() {
            s.last_heard = Some(self.clock.now());
        }
    }

    fn lost(&self) {
        if let Ok(mut s) = self.status.lock()
            && s.connected
        {
            s.connected = false;
            s.lost_since = self.clock.now();
        }
    }

    fn last_event_id(&self) -> Option<String> {
        self.status.lock().ok().and_then(|s| s.last_event_id.clone())
    }

    /// Applies one `deny` or `not_before` object of the feed (`live`: as it happened, not from
    /// a snapshot, so its lag is worth recording).
    fn apply(&self, r: &mut Replica, item: &Value, live: bool) {
        if let Some(deny) = item.get("deny").or_else(|| item.get("jti").or(item.get("sid")).map(|_| item)) {
            let Some(until) = deny.get("until").and_then(seconds) else { return };
            let (map, id) = match (deny.get("jti").and_then(Value::as_str), deny.get("sid").and_then(Value::as_str)) {
                (Some(jti), _) => (&mut r.tokens, jti),
                (None, Some(sid)) => (&mut r.sessions, sid),
                (None, None) => return,
            };
            let e = map.entry(id.to_owned()).or_insert(until);
            *e = (*e).max(until);
        }
        if let Some(nb) = item.get("not_before").or_else(|| item.get("sub").map(|_| item)) {
            let (Some(sub), Some(at)) = (nb.get("sub").and_then(Value::as_str), nb.get("at").and_then(seconds)) else {
                return;
            };
            let e = r.not_before.entry(sub.to_owned()).or_insert(at);
            *e = (*e).max(at);
            if live && let Ok(mut s) = self.status.lock() {
                s.last_lag = Some(self.clock.now().since(at));
            }
        }
    }

    /// One event of the stream.
    fn event(&self, name: &str, id: Option<&str>, data: &str) {
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            tracing::warn!(event = name, "ignoring a feed event that is not JSON");
            return;
        };
        let Ok(mut r) = self.replica.write() else { return };
        match name {
            "snapshot" => {
                let mut fresh = Replica::default();
                for item in value.get("denied").and_then(Value::as_array).into_iter().flatten() {
                    self.apply(&mut fresh, item, false);
                }
                for item in value.get("not_before").and_then(Value::as_array).into_iter().flatten() {
                    self.apply(&mut fresh, item, false);
                }
                *r = fresh;
                if let Ok(mut s) = self.status.lock() {
                    s.connected = true;
                }
            }
            "revocation" => self.apply(&mut r, &value, true),
            _ => return,
        }
        drop(r);
        if let (Some(id), Ok(mut s)) = (id, self.status.lock()) {
            s.last_event_id = Some(id.to_owned());
            // Resumed without a snapshot: the stream is live again.
            s.connected = true;
        }
    }

    /// Forgets expired deny-list entries.
    fn prune(&self) {
        let now = self.clock.now();
        if let Ok(mut r) = self.replica.write() {
            r.tokens.retain(|_, until| now < *until);
            r.sessions.retain(|_, until| now < *until);
        }
    }
}

/// Where and as whom the feed is read.
pub(crate) struct FeedSource {
    pub url: String,
    pub client_id: String,
    pub secret: String,
    pub client: reqwest::Client,
}

/// Reads the stream until the follower is dropped, reconnecting with back-off.
pub(crate) async fn follow(follower: std::sync::Weak<Follower>, source: FeedSource) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(f) = follower.upgrade() else { return };
        match read_stream(&f, &source).await {
            Ok(()) => tracing::info!("revocation feed ended; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "revocation feed lost; reconnecting"),
        }
        let delivered = f.status.lock().is_ok_and(|s| s.connected);
        f.lost();
        f.prune();
        drop(f);
        if delivered {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One Server-Sent Event: its name (`message` when unnamed), id and data.
#[derive(Debug, PartialEq, Eq)]
struct SseEvent {
    name: String,
    id: Option<String>,
    data: String,
}

/// Splits a byte stream into Server-Sent Events. Comments (heartbeats) and events without data
/// are skipped. Each byte is searched for an event's end once, however many chunks a large
/// snapshot arrives in.
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
    /// How far `buffer` has been searched for an event's end.
    searched: usize,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        loop {
            // A "\n\n" may straddle the previous chunk's end: look one byte back.
            let from = self.searched.saturating_sub(1);
            let Some(found) = self.buffer[from..].windows(2).position(|w| w == b"\n\n") else { break };
            let block: Vec<u8> = self.buffer.drain(..from + found + 2).collect();
            self.searched = 0;
            let text = String::from_utf8_lossy(&block);
            let mut event = SseEvent { name: "message".into(), id: None, data: String::new() };
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    v.trim().clone_into(&mut event.name);
                } else if let Some(v) = line.strip_prefix("id:") {
                    event.id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if !event.data.is_empty() {
                events.push(event);
            }
        }
        self.searched = self.buffer.len();
        events
    }

    /// Bytes held of an event not finished yet.
    fn pending(&self) -> usize {
        self.buffer.len()
    }
}

async fn read_stream(f: &Follower, source: &FeedSource) -> Result<(), String> {
    let mut req = source.client.get(&source.url).basic_auth(&source.client_id, Some(&source.secret));
    if let Some(id) = f.last_event_id() {
        req = req.header("last-event-id", id);
    }
    let mut res = req.send().await.map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("{} answered {}", source.url, res.status()));
    }
    let mut parser = SseParser::default();
    loop {
        let next = tokio::time::timeout(SILENCE_LIMIT, res.chunk()).await;
        let Some(chunk) =
            next.map_err(|_| "no heartbeat within the silence limit".to_owned())?.map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        f.heard();
        for event in parser.push(&chunk) {
            f.event(&event.name, event.id.as_deref(), &event.data);
        }
        if parser.pending() > MAX_EVENT_BYTES {
            return Err("a feed event is larger than MAX_EVENT_BYTES".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_wherever_the_chunks_end() {
        let stream = b"event: snapshot\nid: a.1\ndata: {\"x\":1}\n\n: heartbeat\n\nevent: revocation\nid: a.2\ndata: {\"y\":\ndata: 2}\n\n";
        let expected = vec![
            SseEvent { name: "snapshot".into(), id: Some("a.1".into()), data: "{\"x\":1}".into() },
            SseEvent { name: "revocation".into(), id: Some("a.2".into()), data: "{\"y\":\n2}".into() },
        ];
        // Every way of cutting the stream in two, and byte by byte, gives the same events.
        for cut in 0..=stream.len() {
            let mut parser = SseParser::default();
            let mut events = parser.push(&stream[..cut]);
            events.extend(parser.push(&stream[cut..]));
            assert_eq!(events, expected, "cut at {cut}");
            assert_eq!(parser.pending(), 0);
        }
        let mut parser = SseParser::default();
        let events: Vec<SseEvent> = stream.iter().flat_map(|b| parser.push(&[*b])).collect();
        assert_eq!(events, expected);
        // An unfinished event waits; a comment alone is nothing.
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: revocation\ndata: {}").is_empty());
        assert_eq!(parser.pending(), "event: revocation\ndata: {}".len());
        assert!(SseParser::default().push(b": heartbeat\n\n").is_empty());
    }
}
