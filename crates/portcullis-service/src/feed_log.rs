//! This node's log of recent revocation events, for the services that follow the feed.
//!
//! Each event this node hears of (its own and every other node's, through the cluster feed)
//! gets the next sequence number. A service that reconnects names the last position it saw (a
//! cursor, `<log>.<seq>`) and gets what it missed — or, when that has left the log, belongs to
//! another node's log or to one from before a resync, a fresh snapshot instead. A resync (the
//! cluster feed was lost, so events may have been missed) starts a new log.

use std::collections::VecDeque;
use std::sync::Mutex;

use portcullis_core::revocation::RevocationEvent;
use portcullis_core::secret::{b64, fill_random};
use tokio::sync::broadcast;

/// How many recent events one node keeps for services that reconnect.
pub const FEED_LOG_CAPACITY: usize = 4096;

/// How many events one following service may fall behind before it is dropped (it reconnects
/// and resumes, or starts from a snapshot): a slow client never holds up a logout or the others.
pub const FEED_FOLLOWER_BUFFER: usize = 1024;

/// What followers of the log hear, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogItem {
    /// An event, with its position in the log and its cursor.
    Event { seq: u64, cursor: String, event: RevocationEvent },
    /// A new log started (a resync): every follower must start over from a snapshot.
    Reset,
}

struct Log {
    /// Names this log: a new one after every resync.
    id: String,
    /// The sequence number of the last event logged (0: none yet).
    last: u64,
    recent: VecDeque<(u64, RevocationEvent)>,
}

impl Log {
    fn fresh() -> Self {
        let mut bytes = [0u8; 6];
        fill_random(&mut bytes);
        Self { id: b64(&bytes), last: 0, recent: VecDeque::new() }
    }
}

/// What a reconnecting service gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// The events after its cursor, in order (possibly none).
    Events(Vec<(u64, RevocationEvent)>),
    /// The cursor cannot be resumed from: a snapshot is needed.
    Snapshot,
}

pub struct FeedLog {
    log: Mutex<Log>,
    capacity: usize,
    followers: broadcast::Sender<LogItem>,
}

impl Default for FeedLog {
    fn default() -> Self {
        Self::with_capacity(FEED_LOG_CAPACITY)
    }
}

impl FeedLog {
    pub fn with_capacity(capacity: usize) -> Self {
        let followers = broadcast::channel(FEED_FOLLOWER_BUFFER).0;
        Self { log: Mutex::new(Log::fresh()), capacity: capacity.max(1), followers }
    }

    /// Events from now on. Subscribe before reading a cursor or resuming, so nothing falls in
    /// between (events at or before the position already sent are skipped by their `seq`).
    pub fn follow(&self) -> broadcast::Receiver<LogItem> {
        self.followers.subscribe()
    }

    /// The sequence number a cursor names (0 for a malformed one).
    pub fn seq_of(cursor: &str) -> u64 {
        cursor.split_once('.').and_then(|(_, seq)| seq.parse().ok()).unwrap_or(0)
    }

    /// The cursor of event `seq` in the same log as `cursor` (for the events [`Self::resume`]
    /// returns, which are in the log the resumed cursor names).
    pub fn cursor_of(cursor: &str, seq: u64) -> String {
        let log = cursor.split_once('.').map_or("", |(log, _)| log);
        format!("{log}.{seq}")
    }

    /// The position after the last event logged, for a snapshot taken now.
    pub fn cursor(&self) -> String {
        self.log.lock().map(|l| format!("{}.{}", l.id, l.last)).unwrap_or_default()
    }

    /// Logs an event; its cursor.
    pub fn push(&self, event: RevocationEvent) -> String {
        let Ok(mut l) = self.log.lock() else { return String::new() };
        l.last += 1;
        let seq = l.last;
        l.recent.push_back((seq, event.clone()));
        while l.recent.len() > self.capacity {
            l.recent.pop_front();
        }
        let cursor = format!("{}.{seq}", l.id);
        // Sent under the lock, so followers hear events in log order. No follower is fine.
        let _ = self.followers.send(LogItem::Event { seq, cursor: cursor.clone(), event });
        cursor
    }

    /// Ends every follower's stream (the node is shutting down): they reconnect elsewhere and
    /// resume there, or from a snapshot.
    pub fn end_streams(&self) {
        let _ = self.followers.send(LogItem::Reset);
    }

    /// Starts a new log: cursors of the old one can no longer be resumed from.
    pub fn reset(&self) {
        if let Ok(mut l) = self.log.lock() {
            *l = Log::fresh();
            let _ = self.followers.send(LogItem::Reset);
        }
    }

    /// What a service that last saw `cursor` has missed. Anything malformed, foreign or too
    /// old is answered with [`Resume::Snapshot`], never an error.
    pub fn resume(&self, cursor: &str) -> Resume {
        let Ok(l) = self.log.lock() else { return Resume::Snapshot };
        let Some((id, seq)) = cursor.split_once('.') else { return Resume::Snapshot };
        let Ok(seq) = seq.parse::<u64>() else { return Resume::Snapshot };
        if id != l.id || seq > l.last {
            return Resume::Snapshot;
        }
        let oldest_kept = l.recent.front().map_or(l.last + 1, |(s, _)| *s);
        if seq + 1 < oldest_kept {
            return Resume::Snapshot;
        }
        Resume::Events(l.recent.iter().filter(|(s, _)| *s > seq).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use portcullis_core::Timestamp;
    use portcullis_core::revocation::Denied;

    use super::*;

    fn deny(n: u64) -> RevocationEvent {
        RevocationEvent::Deny { what: Denied::Token(format!("j{n}")), until: Timestamp::from_unix_millis(1) }
    }

    #[test]
    fn a_cursor_resumes_with_what_followed_it_until_it_leaves_the_log() {
        let log = FeedLog::with_capacity(3);
        let start = log.cursor();
        assert_eq!(log.resume(&start), Resume::Events(vec![]));
        let first = log.push(deny(1));
        log.push(deny(2));
        assert_eq!(log.resume(&start), Resume::Events(vec![(1, deny(1)), (2, deny(2))]));
        assert_eq!(log.resume(&first), Resume::Events(vec![(2, deny(2))]));
        log.push(deny(3));
        log.push(deny(4));
        // Event 1 has left the log: from the start, a snapshot; from event 1, events 2 to 4.
        assert_eq!(log.resume(&start), Resume::Snapshot);
        assert_eq!(log.resume(&first), Resume::Events(vec![(2, deny(2)), (3, deny(3)), (4, deny(4))]));
        for bad in ["", "x", "x.1", ".", "abc.-1", &first.replace(".1", ".99"), "\u{0}.1"] {
            assert_eq!(log.resume(bad), Resume::Snapshot, "{bad:?}");
        }
        // Followers hear each event with its cursor, and the reset.
        let mut follower = log.follow();
        let fifth = log.push(deny(5));
        assert_eq!(
            follower.try_recv().expect("event"),
            LogItem::Event { seq: 5, cursor: fifth.clone(), event: deny(5) }
        );
        assert_eq!(FeedLog::seq_of(&fifth), 5);
        // After a resync, the old log's cursors are not resumable.
        log.reset();
        assert_eq!(follower.try_recv().expect("reset"), LogItem::Reset);
        assert_eq!(log.resume(&first), Resume::Snapshot);
        assert_eq!(log.resume(&log.cursor()), Resume::Events(vec![]));
    }
}
