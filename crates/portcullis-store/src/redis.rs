//! Redis (a standalone server or a Redis Cluster): session records, refresh state and the
//! revocation state for many nodes, with the revocation feed on Redis pub/sub.
//!
//! Layout (every key has a `{…}` hash tag, so it maps to one Cluster slot):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `pc:sess:{<sid>}` | hash | one session record; expires (PEXPIREAT) when the record dies |
//! | `pc:user:{<user id>}:sessions` | set | the user's session ids (the per-user index) |
//! | `pc:{expiry}` | sorted set | session ids scored by when their record dies (for sweeps) |
//! | `pc:{revocations}:deny` | sorted set | deny-list keys scored by the time they lapse |
//! | `pc:{revocations}:not_before` | hash | user id → not-before epoch (ms) |
//! | `pc:throttle:{<key>}` | hash | failed attempts under one throttle key; expires with them |
//!
//! Changes to the revocation state are published on `pc:revocations`. Every node subscribes;
//! when its subscription (re)connects it is told to re-read the whole state, so nothing
//! published while it was cut off is missed. A record and its index entry live in different
//! slots, so they are written one after the other: an index entry may briefly outlive its record
//! (lists skip and clean such entries), never the other way round. For the same reason the
//! expiry index is a hint, never the verdict: it holds the deadline the record was given
//! (`PEXPIREAT`), only ever moved forward, and a sweep deletes a record only once the record
//! itself, read in its own slot by one script, says its deadline has passed.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use portcullis_core::mfa::Amr;
use portcullis_core::revocation::{Denied, RevocationEvent, RevocationSnapshot};
use portcullis_core::secret::SecretHash;
use portcullis_core::{AuthMode, Clock, Grant, SessionId, SessionRecord, SmolStr, Timestamp, UserId};
use redis::RedisFuture;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncCommands, Script};
use tokio::sync::broadcast;

use crate::{
    Attempt, ClusterFeed, FEED_CAPACITY, FeedItem, FeedStatus, RevocationStore, SessionStore, StoreError, StoreResult,
    Sweep, Swept, ThrottleRule, ThrottleState, ThrottleStore,
};

const CHANNEL: &str = "pc:revocations";
const EXPIRY: &str = "pc:{expiry}";
const DENY: &str = "pc:{revocations}:deny";
const NOT_BEFORE: &str = "pc:{revocations}:not_before";

fn session_key(id: &SessionId) -> String {
    format!("pc:sess:{{{id}}}")
}

fn throttle_key(key: &str) -> String {
    format!("pc:throttle:{{{key}}}")
}

fn index_key(user: &UserId) -> String {
    format!("pc:user:{{{user}}}:sessions")
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A connection to a standalone server, a Redis Cluster, or the master Sentinel names; all
/// reconnect by themselves.
#[derive(Clone)]
enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

/// The master of a Sentinel-monitored group. The master's address is asked of the sentinels on
/// first use and again whenever the connection fails or the server answers that it is a
/// read-only replica (after a failover).
#[derive(Clone)]
struct SentinelConn {
    sentinel: Arc<tokio::sync::Mutex<SentinelClient>>,
    current: Arc<tokio::sync::RwLock<Option<ConnectionManager>>>,
    timeout: Duration,
}

fn manager_config(timeout: Duration) -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(timeout))
        .set_number_of_retries(1)
}

impl SentinelConn {
    async fn master_client(&self) -> redis::RedisResult<redis::Client> {
        self.sentinel.lock().await.async_get_client().await
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        if let Some(c) = self.current.read().await.as_ref() {
            return Ok(c.clone());
        }
        let mut slot = self.current.write().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let client = self.master_client().await?;
        let conn = ConnectionManager::new_with_config(client, manager_config(self.timeout)).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn forget(&self) {
        *self.current.write().await = None;
    }
}

/// Whether an error means the master may have moved.
fn master_moved(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.code() == Some("READONLY")
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::Standalone(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => Box::pin(async move {
                let mut conn = s.connection().await?;
                match conn.req_packed_command(cmd).await {
                    Err(e) if master_moved(&e) => {
                        s.forget().await;
                        s.connection().await?.req_packed_command(cmd).await
                    }
                    other => other,
                }
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(s) => Box::pin(async move {
                let mut conn = s.connection().await?;
                match conn.req_packed_commands(pipeline, offset, count).await {
                    Err(e) if master_moved(&e) => {
                        s.forget().await;
                        s.connection().await?.req_packed_commands(pipeline, offset, count).await
                    }
                    other => other,
                }
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Standalone(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(_) => 0,
        }
    }
}

/// The node addresses of a `redis+cluster://host:port,host:port` URL, as `redis://` URLs.
fn cluster_nodes(url: &str) -> StoreResult<Vec<String>> {
    let rest = url.strip_prefix("redis+cluster://").ok_or_else(|| unavailable("not a redis+cluster:// URL"))?;
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let nodes: Vec<String> =
        hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("redis://{auth}{h}/")).collect();
    if nodes.is_empty() {
        return Err(unavailable("redis+cluster:// needs at least one host:port"));
    }
    Ok(nodes)
}

/// What a `redis+sentinel://[user:password@]host:port[,host:port]/service` URL says.
struct SentinelUrl {
    /// The sentinels, as `redis://` URLs.
    sentinels: Vec<String>,
    service: String,
    /// `(user, password)` for the master.
    auth: Option<(String, String)>,
}

fn sentinel_parts(url: &str) -> StoreResult<SentinelUrl> {
    let rest = url.strip_prefix("redis+sentinel://").ok_or_else(|| unavailable("not a redis+sentinel:// URL"))?;
    let (hosts, service) = rest.split_once('/').ok_or_else(|| unavailable("redis+sentinel:// needs /service"))?;
    let (auth, hosts) = match hosts.rsplit_once('@') {
        Some((auth, hosts)) => {
            let (user, pass) = auth.split_once(':').unwrap_or(("", auth));
            (Some((user.to_owned(), pass.to_owned())), hosts)
        }
        None => (None, hosts),
    };
    let sentinels: Vec<String> = hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("redis://{h}/")).collect();
    let service = service.trim_end_matches('/').to_owned();
    if sentinels.is_empty() || service.is_empty() {
        return Err(unavailable("redis+sentinel:// needs at least one sentinel and a service name"));
    }
    Ok(SentinelUrl { sentinels, service, auth })
}

/// Where the feed subscribes: fixed servers, or the master Sentinel names at each reconnect.
enum FeedSource {
    Fixed(Vec<redis::Client>),
    Sentinel(SentinelConn),
}

/// The keys that hold one session (the layout in this module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// `pc:sess:{<sid>}`: the record, a hash.
    pub record: String,
    /// `pc:user:{<user id>}:sessions`: the user's session ids, a set.
    pub user_index: String,
    /// `pc:{expiry}`: every session id by the moment its record dies, a sorted set.
    pub expiry: &'static str,
}

/// Sessions and revocations in a standalone Redis server, a Redis Cluster, or a
/// Sentinel-monitored master.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    feed: broadcast::Sender<FeedItem>,
    status: Arc<Mutex<FeedStatus>>,
    subscriber: Arc<tokio::task::JoinHandle<()>>,
    options: RedisOptions,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if Arc::strong_count(&self.subscriber) == 1 {
            self.subscriber.abort();
        }
    }
}

/// How long one Redis command may take before the caller is told the store is unavailable.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How the store talks to Redis.
#[derive(Debug, Clone, Copy)]
pub struct RedisOptions {
    /// How long one command may take before the caller is told the store is unavailable.
    pub response_timeout: Duration,
    /// How many deny-list entries one command of the revocation snapshot reads: a page is read
    /// in milliseconds, far within the response timeout, however large the list.
    pub snapshot_page: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self { response_timeout: RESPONSE_TIMEOUT, snapshot_page: 10_000 }
    }
}

/// Where the next page of the deny-list starts, in its order (lapse time, then key).
///
/// A page read by rank can skip an entry if entries before it go meanwhile (a sweep, an entry
/// whose lapse moved later), and one read by score cannot end among entries of one lapse time
/// without an offset that has the same flaw. So a page starts right after the last entry read,
/// checked in the same transaction: the page from the rank that entry had is used only if it
/// still has that rank and that lapse time; otherwise the rank is asked again, or, when the
/// entry is gone or moved, reading restarts at the first entry of its lapse time (some entries
/// come twice, none is skipped).
enum DenyCursor {
    /// From the first entry within this `ZRANGE … BYSCORE` bound (`(now` to begin with).
    Score(String),
    /// After this entry, which had this lapse time and, if known, this rank.
    After { key: String, score: f64, rank: Option<u64> },
}

impl RedisStore {
    /// Connects to `redis://host:port/db` (or `rediss://`), or to a Redis Cluster with
    /// `redis+cluster://host:port,host:port`. Commands time out after [`RESPONSE_TIMEOUT`]; the
    /// connection and the feed reconnect by themselves. `clock` dates the feed's losses.
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        Self::connect_with(url, clock, RedisOptions::default()).await
    }

    /// [`RedisStore::connect`] with other [`RedisOptions`] (tests use a tight timeout and small
    /// pages to show that no command depends on the size of what is stored).
    pub async fn connect_with(url: &str, clock: Arc<dyn Clock>, options: RedisOptions) -> StoreResult<Self> {
        let timeout = options.response_timeout;
        let (conn, source) = if url.starts_with("redis+sentinel://") {
            let SentinelUrl { sentinels, service, auth } = sentinel_parts(url)?;
            let mut info = SentinelNodeConnectionInfo::default();
            if let Some((user, pass)) = auth {
                let mut redis_info = redis::RedisConnectionInfo::default().set_password(pass);
                if !user.is_empty() {
                    redis_info = redis_info.set_username(user);
                }
                info = info.set_redis_connection_info(redis_info);
            }
            let client = SentinelClient::build(sentinels, service, Some(info), SentinelServerType::Master)
                .map_err(unavailable)?;
            let conn = SentinelConn {
                sentinel: Arc::new(tokio::sync::Mutex::new(client)),
                current: Arc::new(tokio::sync::RwLock::new(None)),
                timeout,
            };
            conn.connection().await.map_err(unavailable)?;
            (Conn::Sentinel(conn.clone()), FeedSource::Sentinel(conn))
        } else if url.starts_with("redis+cluster://") {
            let nodes = cluster_nodes(url)?;
            let cluster = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                .response_timeout(timeout)
                .connection_timeout(timeout)
                .build()
                .map_err(unavailable)?;
            let conn = cluster.get_async_connection().await.map_err(unavailable)?;
            // Classic pub/sub is cluster-wide: subscribing on any one node hears every PUBLISH.
            let clients = nodes.iter().map(|n| redis::Client::open(n.as_str())).collect::<Result<Vec<_>, _>>();
            (Conn::Cluster(conn), FeedSource::Fixed(clients.map_err(unavailable)?))
        } else {
            let client = redis::Client::open(url).map_err(unavailable)?;
            let conn = ConnectionManager::new_with_config(client.clone(), manager_config(timeout))
                .await
                .map_err(unavailable)?;
            (Conn::Standalone(conn), FeedSource::Fixed(vec![client]))
        };
        let feed = broadcast::channel(FEED_CAPACITY).0;
        let status =
            Arc::new(Mutex::new(FeedStatus { connected: false, lost_since: Some(clock.now()), connection: 0 }));
        let subscriber = tokio::spawn(subscribe_loop(source, feed.clone(), Arc::clone(&status), clock));
        Ok(Self { conn, feed, status, subscriber: Arc::new(subscriber), options })
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Runs one command on the store's connection (on a Cluster, routed by its first key): for
    /// operators' tools and for tests that read what is stored, not only what is answered.
    pub async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> StoreResult<T> {
        cmd.query_async(&mut self.conn()).await.map_err(unavailable)
    }

    /// Where one session of `user` is kept, as [`RedisStore::command`] needs the keys.
    pub fn session_keys(id: &SessionId, user: &UserId) -> SessionKeys {
        SessionKeys { record: session_key(id), user_index: index_key(user), expiry: EXPIRY }
    }

    /// The key of the counter of one throttle key (a hash).
    pub fn throttle_counter_key(key: &str) -> String {
        throttle_key(key)
    }

    /// Bytes Redis uses for one session record (`MEMORY USAGE`), for sizing.
    pub async fn session_memory(&self, id: &SessionId) -> StoreResult<Option<u64>> {
        redis::cmd("MEMORY").arg("USAGE").arg(session_key(id)).query_async(&mut self.conn()).await.map_err(unavailable)
    }
}

fn set_status(status: &Mutex<FeedStatus>, connected: bool, clock: &dyn Clock) {
    if let Ok(mut s) = status.lock() {
        match (s.connected, connected) {
            (true, false) => *s = FeedStatus { connected: false, lost_since: Some(clock.now()), ..*s },
            (false, true) => *s = FeedStatus { connection: s.connection + 1, ..FeedStatus::CONNECTED },
            _ => {}
        }
    }
}

/// How often a subscription is asked whether it is alive (`PING` on the subscribed connection).
pub const FEED_HEARTBEAT: Duration = Duration::from_secs(1);

/// Returns once the subscription has not answered a `PING` within [`RESPONSE_TIMEOUT`]. Redis
/// answers a connection in order, so a `PONG` also says every message published before the
/// `PING` has been delivered: a feed that seems connected has missed nothing older than
/// [`FEED_HEARTBEAT`] + [`RESPONSE_TIMEOUT`]. Without it, a connection cut without a word (a
/// partition, a frozen server) would look connected until TCP gave up, hours later.
async fn heartbeat(sink: &mut redis::aio::PubSubSink) {
    let mut beat = tokio::time::interval(FEED_HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        match tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<redis::Value>()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "revocation feed does not answer");
                return;
            }
            Err(_) => {
                tracing::warn!("revocation feed silent for {RESPONSE_TIMEOUT:?}");
                return;
            }
        }
    }
}

async fn subscribe_loop(
    source: FeedSource,
    feed: broadcast::Sender<FeedItem>,
    status: Arc<Mutex<FeedStatus>>,
    clock: Arc<dyn Clock>,
) {
    let mut turn = 0usize;
    loop {
        turn = turn.wrapping_add(1);
        let client = match &source {
            FeedSource::Fixed(clients) if !clients.is_empty() => Ok(clients[turn % clients.len()].clone()),
            FeedSource::Fixed(_) => return,
            FeedSource::Sentinel(s) => s.master_client().await,
        };
        // Connecting and subscribing may hang on a server that does not answer: both are timed.
        let pubsub = match client {
            Ok(c) => match tokio::time::timeout(RESPONSE_TIMEOUT, c.get_async_pubsub()).await {
                Ok(connected) => connected,
                Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "connecting timed out"))),
            },
            Err(e) => Err(e),
        };
        match pubsub {
            Ok(pubsub) => {
                let (mut sink, mut messages) = pubsub.split();
                if let Ok(Ok(())) = tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(CHANNEL)).await {
                    set_status(&status, true, clock.as_ref());
                    // Whatever happened while we were not listening is in the snapshot.
                    let _ = feed.send(FeedItem::Resync);
                    let listen = async {
                        while let Some(msg) = messages.next().await {
                            let Ok(payload) = msg.get_payload::<String>() else { continue };
                            match decode(&payload) {
                                Some(item) => {
                                    let _ = feed.send(item);
                                }
                                None => tracing::warn!("malformed feed message ignored"),
                            }
                        }
                    };
                    // Whichever ends first ends this connection: the server closed it, or it
                    // stopped answering while the socket looked open.
                    tokio::select! {
                        () = listen => {}
                        () = heartbeat(&mut sink) => {}
                    }
                }
                set_status(&status, false, clock.as_ref());
                tracing::warn!("revocation feed lost; reconnecting");
            }
            Err(e) => {
                set_status(&status, false, clock.as_ref());
                tracing::debug!(error = %e, "revocation feed cannot connect yet");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn encode_event(event: &RevocationEvent) -> String {
    match event {
        RevocationEvent::Deny { what, until } => {
            serde_json::json!({"deny": what.key(), "until": until.unix_millis()}).to_string()
        }
        RevocationEvent::NotBefore { user, at } => {
            serde_json::json!({"user": user.as_str(), "not_before": at.unix_millis()}).to_string()
        }
    }
}

fn decode(s: &str) -> Option<FeedItem> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    if let Some(key) = v.get("deny").and_then(|k| k.as_str()) {
        let until = Timestamp::from_unix_millis(v.get("until")?.as_i64()?);
        return Some(FeedItem::Event(RevocationEvent::Deny { what: Denied::from_key(key)?, until }));
    }
    if let Some(ended) = v.get("ended").and_then(|e| e.as_array()) {
        let ids = ended.iter().filter_map(|i| i.as_str().and_then(SessionId::parse)).collect();
        return Some(FeedItem::SessionsEnded(ids));
    }
    if v.get("keys").is_some() {
        return Some(FeedItem::KeysChanged);
    }
    if v.get("resync").is_some() {
        return Some(FeedItem::Resync);
    }
    let user = UserId::from_stored(v.get("user")?.as_str()?);
    let at = Timestamp::from_unix_millis(v.get("not_before")?.as_i64()?);
    Some(FeedItem::Event(RevocationEvent::NotBefore { user, at }))
}

fn record_fields(r: &SessionRecord) -> Vec<(&'static str, Vec<u8>)> {
    let mut f = vec![
        ("h", r.secret_hash.0.to_vec()),
        ("u", r.user_id.as_str().as_bytes().to_vec()),
        ("m", r.mode.as_str().as_bytes().to_vec()),
        ("c", r.created_at.unix_millis().to_string().into_bytes()),
        ("l", r.last_seen_at.unix_millis().to_string().into_bytes()),
        ("i", r.idle_expires_at.unix_millis().to_string().into_bytes()),
        ("e", r.expires_at.unix_millis().to_string().into_bytes()),
        ("g", r.refresh_generation.to_string().into_bytes()),
    ];
    if let Some(ip) = &r.ip {
        f.push(("ip", ip.as_bytes().to_vec()));
    }
    if let Some(ua) = &r.user_agent {
        f.push(("ua", ua.as_bytes().to_vec()));
    }
    if let Some(at) = r.rotated_at {
        f.push(("r", at.unix_millis().to_string().into_bytes()));
    }
    if let Some(grant) = &r.grant {
        f.push(("a", grant.encode().into_bytes()));
    }
    // Absent: a password sign-in (what every record was before `amr` was kept).
    if r.amr != Amr::PWD {
        f.push(("f", r.amr.bits().to_string().into_bytes()));
    }
    f
}

/// The fields of a session record's hash, in the order [`RedisStore`]'s `get` asks for them
/// (`HMGET`: only the values come back, in this order, with no field names and no map to build).
const RECORD_FIELDS: [&str; 13] = ["h", "u", "m", "c", "l", "i", "e", "ip", "ua", "g", "r", "a", "f"];

/// A record from its fields' values in [`RECORD_FIELDS`] order; all absent: no record.
fn parse_record(id: &SessionId, values: &[Option<Vec<u8>>]) -> StoreResult<Option<SessionRecord>> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("session field {what}"));
    let [h, u, m, c, l, i, e, ip, ua, g, r, a, f] = values else { return Err(corrupt("count")) };
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    fn text(v: &Option<Vec<u8>>) -> Option<&str> {
        v.as_deref().and_then(|v| std::str::from_utf8(v).ok())
    }
    let int = |v: &Option<Vec<u8>>, what| text(v).and_then(|v| v.parse::<i64>().ok()).ok_or_else(|| corrupt(what));
    let ts = |v: &Option<Vec<u8>>, what| int(v, what).map(Timestamp::from_unix_millis);
    let secret_hash: [u8; 32] = h.as_deref().and_then(|v| v.try_into().ok()).ok_or_else(|| corrupt("h"))?;
    Ok(Some(SessionRecord {
        id: id.clone(),
        secret_hash: SecretHash(secret_hash),
        user_id: UserId::from_stored(text(u).ok_or_else(|| corrupt("u"))?),
        mode: text(m).and_then(AuthMode::parse).ok_or_else(|| corrupt("m"))?,
        created_at: ts(c, "c")?,
        last_seen_at: ts(l, "l")?,
        idle_expires_at: ts(i, "i")?,
        expires_at: ts(e, "e")?,
        ip: text(ip).map(SmolStr::new),
        user_agent: text(ua).map(SmolStr::new),
        refresh_generation: u64::try_from(int(g, "g")?).map_err(|_| corrupt("g"))?,
        rotated_at: r.is_some().then(|| ts(r, "r")).transpose()?,
        grant: a
            .is_some()
            .then(|| text(a).and_then(Grant::decode).map(Box::new).ok_or_else(|| corrupt("a")))
            .transpose()?,
        amr: match f {
            None => Amr::PWD,
            Some(_) => Amr::from_bits(text(f).and_then(|v| v.parse().ok()).ok_or_else(|| corrupt("f"))?),
        },
    }))
}

/// Creates the record unless its key exists. KEYS[1] session; ARGV[1] expiry (ms), then
/// field/value pairs.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1",
    )
});

/// Records a use if the record exists. ARGV: last_seen, idle_expires_at. Returns the moment
/// the record now dies (the `PEXPIREAT` it was given: the idle deadline, never past the
/// absolute one), or 0 when there is no record. The caller writes that moment, and nothing
/// else, into the expiry index.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'l', ARGV[1], 'i', ARGV[2])
local e = tonumber(redis.call('HGET', KEYS[1], 'e'))
local i = tonumber(ARGV[2])
if e < i then i = e end
redis.call('PEXPIREAT', KEYS[1], i)
return i",
    )
});

/// The sweep's decision, made on the record itself: the expiry index only says when a record
/// may have died, and the record (in another Cluster slot) is the truth. ARGV: now (ms).
/// Deletes a record whose idle or absolute deadline has passed and returns its user id; returns
/// the moment a live record dies, without touching it (the index entry was early: the caller
/// moves it there); false when there is no record. A record without readable deadlines cannot
/// be used (reading it is an error), so it is deleted.
static SWEEP_ONE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HMGET', KEYS[1], 'u', 'i', 'e')
if not v[1] then return false end
local i, e = tonumber(v[2]), tonumber(v[3])
if i and e then
  local dies = math.min(i, e)
  if dies > tonumber(ARGV[1]) then return dies end
end
redis.call('DEL', KEYS[1])
return v[1]",
    )
});

/// Compare-and-set rotation. ARGV: expected generation, new hash, now.
static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local g = redis.call('HGET', KEYS[1], 'g')
if not g or g ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'g', tostring(tonumber(g) + 1), 'h', ARGV[2], 'r', ARGV[3], 'l', ARGV[3])
return 1",
    )
});

/// Takes a rotation back if the record is exactly as it left it. ARGV: the generation it
/// rotated to, its hash, its time; then the generation, hash, rotated_at ('' for none) and
/// last_seen_at to restore. Sent with EVAL, not EVALSHA: it runs after a stall, when a script
/// cache miss could not be answered by loading it (the caller has given up waiting).
const UNDO_ROTATION: &str = r"
local v = redis.call('HMGET', KEYS[1], 'g', 'h', 'r')
if v[1] ~= ARGV[1] or v[2] ~= ARGV[2] or v[3] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'g', ARGV[4], 'h', ARGV[5], 'l', ARGV[7])
if ARGV[6] == '' then redis.call('HDEL', KEYS[1], 'r') else redis.call('HSET', KEYS[1], 'r', ARGV[6]) end
return 1";

/// Deletes the record and returns its user id (or false).
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local u = redis.call('HGET', KEYS[1], 'u')
if not u then return false end
redis.call('DEL', KEYS[1])
return u",
    )
});

/// Moves a not-before epoch forward only. KEYS[1] hash; ARGV: user, at.
static NOT_BEFORE_MAX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1",
    )
});

/// An attempt under a throttle key: the arithmetic of [`ThrottleState::begin_attempt`], whose
/// time never runs backwards. ARGV: now, free, base delay, max delay, window (ms). Returns {1,
/// failures, blocked_until, expires_at, the attempt's time} when admitted (and counted), {0,
/// blocked_until} when refused.
static BEGIN_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local now = tonumber(ARGV[1])
local free, base, max, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local v = redis.call('HMGET', KEYS[1], 'f', 'l', 'b', 'x')
if v[1] and tonumber(v[2]) > now then now = tonumber(v[2]) end
local f = 0
if v[1] and tonumber(v[4]) > now and now - tonumber(v[2]) < window then
  if tonumber(v[3]) > now then return {{0, tonumber(v[3])}} end
  f = tonumber(v[1])
end
f = f + 1
{}
local b = now + delay
local x = math.max(now + window, b)
redis.call('HSET', KEYS[1], 'f', f, 'l', now, 'b', b, 'x', x)
redis.call('PEXPIREAT', KEYS[1], x)
return {{1, f, b, x, now}}",
        ThrottleRule::DELAY_LUA
    ))
});

/// Gives back one counted attempt: the arithmetic of [`ThrottleState::refunded`]. ARGV: free,
/// base delay, max delay (ms).
static REFUND_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local free, base, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'f', 'l', 'b')
if not v[1] then return 0 end
local f = tonumber(v[1]) - 1
if f <= 0 then redis.call('DEL', KEYS[1]) return 1 end
{}
redis.call('HSET', KEYS[1], 'f', f, 'b', math.min(tonumber(v[3]), tonumber(v[2]) + delay))
return 1",
        ThrottleRule::DELAY_LUA
    ))
});

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl ThrottleStore for RedisStore {
    async fn throttle_state(&self, key: &str, now: Timestamp) -> StoreResult<Option<ThrottleState>> {
        let v: Vec<Option<i64>> = redis::cmd("HMGET")
            .arg(throttle_key(key))
            .arg(&["f", "l", "b", "x"])
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let (Some(Some(f)), Some(Some(l)), Some(Some(b)), Some(Some(x))) = (v.first(), v.get(1), v.get(2), v.get(3))
        else {
            return Ok(None);
        };
        let state = ThrottleState {
            failures: u32::try_from(*f).map_err(|_| StoreError::Corrupt("throttle count".into()))?,
            last_failure_at: Timestamp::from_unix_millis(*l),
            blocked_until: Timestamp::from_unix_millis(*b),
            expires_at: Timestamp::from_unix_millis(*x),
        };
        Ok((now < state.expires_at).then_some(state))
    }

    async fn begin_attempt(&self, key: &str, rule: &ThrottleRule, now: Timestamp) -> StoreResult<Attempt> {
        let v: Vec<i64> = BEGIN_ATTEMPT
            .key(throttle_key(key))
            .arg(now.unix_millis())
            .arg(rule.free)
            .arg(millis(rule.base_delay))
            .arg(millis(rule.max_delay))
            .arg(millis(rule.window))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match v.as_slice() {
            [0, b] => Ok(Attempt::Refused { until: Timestamp::from_unix_millis(*b) }),
            [1, f, b, x, at] => Ok(Attempt::Admitted(ThrottleState {
                failures: u32::try_from(*f).map_err(|_| StoreError::Corrupt("throttle count".into()))?,
                last_failure_at: Timestamp::from_unix_millis(*at),
                blocked_until: Timestamp::from_unix_millis(*b),
                expires_at: Timestamp::from_unix_millis(*x),
            })),
            _ => Err(StoreError::Corrupt("throttle script answer".into())),
        }
    }

    async fn refund_attempt(&self, key: &str, rule: &ThrottleRule, _now: Timestamp) -> StoreResult<()> {
        let _: i64 = REFUND_ATTEMPT
            .key(throttle_key(key))
            .arg(rule.free)
            .arg(millis(rule.base_delay))
            .arg(millis(rule.max_delay))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn clear_failures(&self, key: &str) -> StoreResult<()> {
        let _: i64 = self.conn().del(throttle_key(key)).await.map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, record: &SessionRecord) -> StoreResult<()> {
        let mut conn = self.conn();
        let key = session_key(&record.id);
        let mut inv = CREATE.key(&key);
        let dies = record.dies_at().unix_millis();
        inv.arg(dies);
        for (k, v) in record_fields(record) {
            inv.arg(k).arg(v);
        }
        let created: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        if created == 0 {
            return Err(StoreError::Duplicate);
        }
        // The index and the expiry set live in other slots than the record: separate commands.
        let index = index_key(&record.user_id);
        let expires = record.expires_at.unix_millis();
        let _: i64 = conn.zadd(EXPIRY, record.id.as_str(), dies).await.map_err(unavailable)?;
        let _: i64 = conn.sadd(&index, record.id.as_str()).await.map_err(unavailable)?;
        redis::pipe()
            .cmd("PEXPIREAT")
            .arg(&index)
            .arg(expires)
            .arg("NX")
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&index)
            .arg(expires)
            .arg("GT")
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn get(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        let values: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(session_key(id))
            .arg(&RECORD_FIELDS[..])
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        parse_record(id, &values)
    }

    async fn touch(&self, id: &SessionId, last_seen_at: Timestamp, idle_expires_at: Timestamp) -> StoreResult<()> {
        let mut conn = self.conn();
        let dies: i64 = TOUCH
            .key(session_key(id))
            .arg(last_seen_at.unix_millis())
            .arg(idle_expires_at.unix_millis())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if dies > 0 {
            raise_expiry(&mut conn, id.as_str(), dies).await?;
        }
        Ok(())
    }

    async fn delete(&self, id: &SessionId) -> StoreResult<bool> {
        let mut conn = self.conn();
        let user: Option<String> = DELETE.key(session_key(id)).invoke_async(&mut conn).await.map_err(unavailable)?;
        match user {
            Some(u) => {
                let _: i64 = conn.srem(index_key(&UserId::from_stored(u)), id.as_str()).await.map_err(unavailable)?;
                let _: i64 = conn.zrem(EXPIRY, id.as_str()).await.map_err(unavailable)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn list_for_user(&self, user: &UserId) -> StoreResult<Vec<SessionRecord>> {
        let mut conn = self.conn();
        let ids: Vec<String> = conn.smembers(index_key(user)).await.map_err(unavailable)?;
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for raw in ids {
            let Some(id) = SessionId::parse(&raw) else {
                stale.push(raw);
                continue;
            };
            match self.get(&id).await? {
                Some(r) if &r.user_id == user => out.push(r),
                _ => stale.push(raw),
            }
        }
        if !stale.is_empty() {
            let _: i64 = conn.srem(index_key(user), stale).await.map_err(unavailable)?;
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn delete_for_user(&self, user: &UserId, keep: Option<&SessionId>) -> StoreResult<u64> {
        let mut conn = self.conn();
        let ids: Vec<String> = conn.smembers(index_key(user)).await.map_err(unavailable)?;
        let mut n = 0;
        for raw in ids {
            if keep.is_some_and(|k| k.as_str() == raw) {
                continue;
            }
            if let Some(id) = SessionId::parse(&raw) {
                let deleted: i64 = conn.del(session_key(&id)).await.map_err(unavailable)?;
                n += u64::try_from(deleted).unwrap_or(0);
            }
            let _: i64 = conn.srem(index_key(user), &raw).await.map_err(unavailable)?;
            let _: i64 = conn.zrem(EXPIRY, &raw).await.map_err(unavailable)?;
        }
        Ok(n)
    }

    async fn rotate_refresh(
        &self,
        id: &SessionId,
        from_generation: u64,
        new_hash: SecretHash,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let rotated: i64 = ROTATE
            .key(session_key(id))
            .arg(from_generation.to_string())
            .arg(&new_hash.0[..])
            .arg(now.unix_millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(rotated == 1)
    }

    async fn undo_rotation(&self, before: &SessionRecord, new_hash: SecretHash, now: Timestamp) -> StoreResult<bool> {
        let undone: i64 = redis::cmd("EVAL")
            .arg(UNDO_ROTATION)
            .arg(1)
            .arg(session_key(&before.id))
            .arg(before.refresh_generation.saturating_add(1).to_string())
            .arg(&new_hash.0[..])
            .arg(now.unix_millis().to_string())
            .arg(before.refresh_generation.to_string())
            .arg(&before.secret_hash.0[..])
            .arg(before.rotated_at.map(|t| t.unix_millis().to_string()).unwrap_or_default())
            .arg(before.last_seen_at.unix_millis().to_string())
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(undone == 1)
    }

    async fn ping(&self) -> StoreResult<()> {
        redis::cmd("PING").query_async::<String>(&mut self.conn()).await.map(drop).map_err(unavailable)
    }
}

/// Moves a session's entry in the expiry index forward to `dies` (ms), never back (`GT`): two
/// uses whose writes cross leave the later deadline; an entry later than its record is
/// harmless (the record expires by itself, and the sweep then finds nothing to delete).
async fn raise_expiry(conn: &mut Conn, id: &str, dies: i64) -> StoreResult<()> {
    redis::cmd("ZADD")
        .arg(EXPIRY)
        .arg("GT")
        .arg(dies)
        .arg(id)
        .query_async::<i64>(conn)
        .await
        .map(drop)
        .map_err(unavailable)
}

/// Moves a user's not-before epoch forward to `at` (never back).
async fn raise_not_before(conn: &mut Conn, user: &UserId, at: Timestamp) -> StoreResult<()> {
    NOT_BEFORE_MAX
        .key(NOT_BEFORE)
        .arg(user.as_str())
        .arg(at.unix_millis())
        .invoke_async::<i64>(conn)
        .await
        .map(drop)
        .map_err(unavailable)
}

#[async_trait]
impl RevocationStore for RedisStore {
    async fn revoke(&self, event: &RevocationEvent) -> StoreResult<()> {
        let mut conn = self.conn();
        match event {
            RevocationEvent::Deny { what, until } => {
                redis::cmd("ZADD")
                    .arg(DENY)
                    .arg("GT")
                    .arg(until.unix_millis())
                    .arg(what.key())
                    .query_async::<i64>(&mut conn)
                    .await
                    .map_err(unavailable)?;
            }
            RevocationEvent::NotBefore { user, at } => raise_not_before(&mut conn, user, *at).await?,
        }
        let _: i64 = conn.publish(CHANNEL, encode_event(event)).await.map_err(unavailable)?;
        Ok(())
    }

    /// Read in pages ([`RedisOptions::snapshot_page`] entries each), so that no command's time
    /// grows with the deny-list: one `ZRANGE` of a million entries took longer than the
    /// response timeout, and a node could neither start nor resync. See [`DenyCursor`] for why
    /// no entry present throughout the read is skipped. An entry added after the read began
    /// may be missed; it was also published on the feed, which is heard from before the read.
    /// An entry may come twice (its lapse moved later, or a page was read again); the merge
    /// keeps the latest lapse.
    async fn snapshot(&self, now: Timestamp) -> StoreResult<RevocationSnapshot> {
        let mut conn = self.conn();
        let mut snap = RevocationSnapshot::default();
        let n = self.options.snapshot_page.max(1);
        let mut cursor = DenyCursor::Score(format!("({}", now.unix_millis()));
        loop {
            let (page, start) = match &cursor {
                DenyCursor::Score(bound) => {
                    let page: Vec<(String, f64)> = redis::cmd("ZRANGE")
                        .arg(DENY)
                        .arg(bound)
                        .arg("+inf")
                        .arg("BYSCORE")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(n)
                        .arg("WITHSCORES")
                        .query_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    (page, None)
                }
                DenyCursor::After { key, score, rank: None } => {
                    let (now_score, now_rank): (Option<f64>, Option<u64>) = redis::pipe()
                        .atomic()
                        .zscore(DENY, key)
                        .zrank(DENY, key)
                        .query_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    cursor = match (now_score, now_rank) {
                        (Some(s), Some(r)) if s == *score => {
                            DenyCursor::After { key: key.clone(), score: *score, rank: Some(r) }
                        }
                        _ => DenyCursor::Score(score.to_string()),
                    };
                    continue;
                }
                DenyCursor::After { key, score, rank: Some(rank) } => {
                    // One transaction (one key, so one Cluster slot): where the last entry is
                    // now, and the page that follows where it was.
                    let start = isize::try_from(*rank).unwrap_or(isize::MAX).saturating_add(1);
                    let stop = start.saturating_add(isize::try_from(n).unwrap_or(isize::MAX) - 1);
                    let (now_score, now_rank, page): (Option<f64>, Option<u64>, Vec<(String, f64)>) = redis::pipe()
                        .atomic()
                        .zscore(DENY, key)
                        .zrank(DENY, key)
                        .zrange_withscores(DENY, start, stop)
                        .query_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    match (now_score, now_rank) {
                        (Some(s), Some(r)) if s == *score && r == *rank => (page, Some(*rank)),
                        // Still there, elsewhere (entries before it came or went): the page
                        // after it, from where it is now.
                        (Some(s), Some(r)) if s == *score => {
                            cursor = DenyCursor::After { key: key.clone(), score: *score, rank: Some(r) };
                            continue;
                        }
                        // Gone (swept) or moved later: again from the first entry of its time.
                        _ => {
                            cursor = DenyCursor::Score(score.to_string());
                            continue;
                        }
                    }
                }
            };
            let full = page.len() >= n;
            let last = page.last().map(|(key, score)| (key.clone(), *score));
            // The last entry's rank, when the page was read by rank.
            let last_rank = start.map(|r| r + u64::try_from(page.len()).unwrap_or(u64::MAX));
            for (key, until) in page {
                // Scores are whole milliseconds, well within f64's exact integers.
                #[allow(clippy::cast_possible_truncation)]
                let until = Timestamp::from_unix_millis(until as i64);
                if let Some(what) = Denied::from_key(&key) {
                    snap.denied.push((what, until));
                }
            }
            let Some((key, score)) = last.filter(|_| full) else { break };
            cursor = DenyCursor::After { key, score, rank: last_rank };
        }
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<(String, i64)>) = redis::cmd("HSCAN")
                .arg(NOT_BEFORE)
                .arg(cursor)
                .arg("COUNT")
                .arg(self.options.snapshot_page.max(1))
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            for (user, at) in page {
                snap.not_before.push((UserId::from_stored(user), Timestamp::from_unix_millis(at)));
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(snap)
    }

    /// Deny-list entries in batches of a few hundred, without publishing.
    async fn restore(&self, missing: &RevocationSnapshot) -> StoreResult<()> {
        let mut conn = self.conn();
        for chunk in missing.denied.chunks(500) {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(DENY).arg("GT");
            for (what, until) in chunk {
                zadd.arg(until.unix_millis()).arg(what.key());
            }
            zadd.query_async::<i64>(&mut conn).await.map_err(unavailable)?;
        }
        // One epoch per user who signed out everywhere within a token lifetime: few.
        for (user, at) in &missing.not_before {
            raise_not_before(&mut conn, user, *at).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ClusterFeed for RedisStore {
    fn subscribe(&self) -> broadcast::Receiver<FeedItem> {
        self.feed.subscribe()
    }

    async fn announce_ended(&self, ids: &[SessionId]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = ids.iter().map(SessionId::as_str).collect();
        let msg = serde_json::json!({ "ended": ids }).to_string();
        let _: i64 = self.conn().publish(CHANNEL, msg).await.map_err(unavailable)?;
        Ok(())
    }

    async fn announce_keys_changed(&self) -> StoreResult<()> {
        let _: i64 = self.conn().publish(CHANNEL, r#"{"keys":true}"#).await.map_err(unavailable)?;
        Ok(())
    }

    async fn announce_resync(&self) -> StoreResult<()> {
        let _: i64 = self.conn().publish(CHANNEL, r#"{"resync":true}"#).await.map_err(unavailable)?;
        Ok(())
    }

    fn feed_status(&self) -> FeedStatus {
        self.status.lock().map(|s| *s).unwrap_or(FeedStatus { connected: false, lost_since: None, connection: 0 })
    }
}

#[async_trait]
impl Sweep for RedisStore {
    /// Redis also expires records and throttle counters by itself (PEXPIREAT at their death, by
    /// its own clock); this sweep follows the caller's clock, and cleans the per-user index and
    /// the deny-list, whose entries Redis cannot expire one by one.
    async fn sweep(&self, now: Timestamp) -> StoreResult<Swept> {
        let sessions = self.sweep_sessions(now).await?;
        Ok(Swept { sessions, revocations: self.sweep_denied(now).await?, throttles: 0 })
    }
}

impl RedisStore {
    /// Deletes the records the expiry index says may have died by `now`, each only once the
    /// record itself says so ([`SWEEP_ONE`]): an index entry that is early (a write after a
    /// use that did not reach the index, or one left by an earlier version) moves to the
    /// record's real deadline instead, so a sweep never ends a live session.
    async fn sweep_sessions(&self, now: Timestamp) -> StoreResult<u64> {
        let mut conn = self.conn();
        let due: Vec<String> = conn.zrangebyscore(EXPIRY, "-inf", now.unix_millis()).await.map_err(unavailable)?;
        let mut n = 0;
        for raw in due {
            if let Some(id) = SessionId::parse(&raw) {
                let answer: redis::Value = SWEEP_ONE
                    .key(session_key(&id))
                    .arg(now.unix_millis())
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                match answer {
                    redis::Value::Int(dies) => {
                        raise_expiry(&mut conn, &raw, dies).await?;
                        continue;
                    }
                    redis::Value::BulkString(user) => {
                        let user =
                            String::from_utf8(user).map_err(|_| StoreError::Corrupt("session field u".into()))?;
                        let _: i64 =
                            conn.srem(index_key(&UserId::from_stored(user)), &raw).await.map_err(unavailable)?;
                        n += 1;
                    }
                    _ => {}
                }
            }
            let _: i64 = conn.zrem(EXPIRY, &raw).await.map_err(unavailable)?;
        }
        Ok(n)
    }

    async fn sweep_denied(&self, now: Timestamp) -> StoreResult<u64> {
        redis::cmd("ZREMRANGEBYSCORE")
            .arg(DENY)
            .arg("-inf")
            .arg(now.unix_millis())
            .query_async::<u64>(&mut self.conn())
            .await
            .map_err(unavailable)
    }
}
