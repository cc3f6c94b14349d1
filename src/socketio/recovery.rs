//! Connection state recovery (Socket.IO 4.6+): a client whose connection drops and that comes
//! back within `max_disconnection` gets its socket id, rooms and data back, and every event it
//! missed, in order and once.
//!
//! Each namespace with recovery on numbers the events it sends without an ack: the number goes
//! to the client as the event's last argument (its "offset") and the encoded packet stays in a
//! backlog capped by age, count and bytes. A socket that drops for a reason the client did not
//! choose is kept as a session under a private id (`pid`, sent in the CONNECT ack). A CONNECT
//! with `{pid, offset}` then replays the backlog after `offset` to the rooms the socket was in.
//! When the backlog no longer reaches back to `offset` the client is treated as new: a gap is
//! worse than a fresh start, which the client can see (`socket.recovered` is false).
//!
//! Sending and recording happen under one lock, so a packet is either in the backlog a restore
//! replays or sent to the restored socket live, never both and never neither.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use http::Extensions;

use super::Encoded;
use super::rooms::Room;
use super::socket::{Socket, SocketId};

/// Connection state recovery settings; `None` in [`super::SocketIoConfig`] turns it off.
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// How long a dropped socket can be recovered (the reference's `maxDisconnectionDuration`).
    pub max_disconnection: Duration,
    /// Recovered sockets skip the connect middleware (the reference's `skipMiddlewares`).
    /// Off by default: the middleware checks the credentials of the reconnecting client.
    pub skip_middleware: bool,
    /// Most packets the backlog keeps, per namespace.
    pub max_backlog_packets: usize,
    /// Most bytes the backlog keeps, per namespace.
    pub max_backlog_bytes: usize,
    /// Most dropped sockets kept for recovery, per namespace; the oldest go first.
    pub max_sessions: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            max_disconnection: Duration::from_secs(120),
            skip_middleware: false,
            max_backlog_packets: 10_000,
            max_backlog_bytes: 4 << 20,
            max_sessions: 2_000,
        }
    }
}

/// Who a recorded packet was for: the same shape as a broadcast.
#[derive(Debug, Clone, Default)]
pub(super) struct Target {
    /// Any of these rooms (a socket id names the socket itself); empty means everyone.
    pub rooms: Vec<Room>,
    pub except: Vec<Room>,
    pub except_socket: Option<SocketId>,
}

impl Target {
    pub fn socket(id: &SocketId) -> Target {
        Target { rooms: vec![Room::from(&**id)], ..Target::default() }
    }

    fn includes(&self, id: &SocketId, rooms: &[Room]) -> bool {
        let member = |room: &Room| room.as_ref() == id.as_ref() || rooms.contains(room);
        (self.rooms.is_empty() || self.rooms.iter().any(member))
            && !self.except.iter().any(member)
            && self.except_socket.as_ref() != Some(id)
    }
}

/// A socket that dropped, waiting for its client to come back.
#[derive(Debug, Clone)]
pub(super) struct Dropped {
    pub id: SocketId,
    pub pid: SocketId,
    pub rooms: Vec<Room>,
    pub extensions: Extensions,
    /// The first packet ever queued for the socket; replay starts there when the client
    /// reports no offset (it never received an event).
    pub first_queued: Option<u64>,
}

/// What a reconnecting client presents: `{pid, offset}` in its CONNECT payload.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub pid: String,
    pub offset: Option<String>,
}

impl Claim {
    pub fn from_auth(auth: &serde_json::Value) -> Option<Claim> {
        let pid = auth.get("pid")?.as_str()?.to_owned();
        let offset = auth.get("offset").and_then(|o| o.as_str()).map(str::to_owned);
        Some(Claim { pid, offset })
    }
}

/// A recovered socket: its old state and the packets it missed, oldest first.
pub(super) struct Restored {
    pub dropped: Dropped,
    pub missed: Vec<(u64, Encoded)>,
}

struct Entry {
    seq: u64,
    at: Instant,
    target: Target,
    encoded: Encoded,
    bytes: usize,
}

#[derive(Default)]
struct Backlog {
    entries: VecDeque<Entry>,
    bytes: usize,
}

struct Kept {
    dropped: Dropped,
    resume_from: u64,
    at: Instant,
}

#[derive(Default)]
struct Sessions {
    by_pid: HashMap<SocketId, Kept>,
    /// Oldest first, for expiry and the size cap; stale pairs are skipped.
    order: VecDeque<(Instant, SocketId)>,
}

/// One namespace's backlog and dropped sockets.
///
/// Lock order: `backlog` before `sessions`. A send can close a session whose client does not
/// read, which keeps its socket here, so keeping needs `sessions` alone.
pub(super) struct Recovery {
    config: RecoveryConfig,
    /// The number the next recorded packet gets; advanced only after that packet went out.
    next_seq: AtomicU64,
    backlog: Mutex<Backlog>,
    sessions: Mutex<Sessions>,
    /// Connected sockets by private id, so a client that comes back before its old
    /// connection is known to be dead (polling, a silent network) can take it over.
    live: Mutex<HashMap<SocketId, Weak<Socket>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Recovery {
    pub fn new(config: RecoveryConfig) -> Recovery {
        Recovery {
            config,
            next_seq: AtomicU64::new(1),
            backlog: Mutex::default(),
            sessions: Mutex::default(),
            live: Mutex::default(),
        }
    }

    pub fn skip_middleware(&self) -> bool {
        self.config.skip_middleware
    }

    /// Numbers a packet, keeps it, and hands it to `deliver` (which queues it for its
    /// recipients) before any other packet of the namespace can be recorded or replayed.
    pub fn record<R>(
        &self,
        target: Target,
        encode: impl FnOnce(&str) -> Encoded,
        deliver: impl FnOnce(u64, &Encoded) -> R,
    ) -> R {
        let mut backlog = lock(&self.backlog);
        let seq = self.next_seq.load(Ordering::SeqCst);
        let encoded = encode(&seq.to_string());
        let bytes = encoded.len();
        let now = Instant::now();
        backlog.entries.push_back(Entry { seq, at: now, target, encoded: encoded.clone(), bytes });
        backlog.bytes += bytes;
        self.trim(&mut backlog, now);
        let result = deliver(seq, &encoded);
        self.next_seq.store(seq + 1, Ordering::SeqCst);
        result
    }

    fn trim(&self, backlog: &mut Backlog, now: Instant) {
        while let Some(front) = backlog.entries.front() {
            let over = backlog.entries.len() > self.config.max_backlog_packets
                || backlog.bytes > self.config.max_backlog_bytes
                || now.duration_since(front.at) > self.config.max_disconnection;
            if !over {
                break;
            }
            backlog.bytes -= front.bytes;
            backlog.entries.pop_front();
        }
    }

    pub fn track(&self, pid: &SocketId, socket: &Arc<Socket>) {
        lock(&self.live).insert(pid.clone(), Arc::downgrade(socket));
    }

    pub fn untrack(&self, pid: &SocketId) {
        lock(&self.live).remove(pid);
    }

    /// The connected socket holding `pid`, if any.
    pub fn live(&self, pid: &str) -> Option<Arc<Socket>> {
        lock(&self.live).get(pid)?.upgrade()
    }

    /// Keeps a dropped socket, as `describe` tells it, for its client to come back to.
    pub fn keep(&self, describe: impl FnOnce() -> Dropped) {
        // The counter is read before `describe` reads the socket's first queued packet: a
        // packet numbered below the counter has been delivered, and so marked on the socket.
        let resume_from = self.next_seq.load(Ordering::SeqCst);
        let dropped = describe();
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        self.expire(&mut sessions, now);
        while sessions.by_pid.len() >= self.config.max_sessions {
            let Some((_, pid)) = sessions.order.pop_front() else { break };
            sessions.by_pid.remove(&pid);
        }
        sessions.order.push_back((now, dropped.pid.clone()));
        sessions.by_pid.insert(dropped.pid.clone(), Kept { dropped, resume_from, at: now });
    }

    fn expire(&self, sessions: &mut Sessions, now: Instant) {
        while let Some((at, pid)) = sessions.order.front().cloned() {
            if now.duration_since(at) <= self.config.max_disconnection {
                break;
            }
            sessions.order.pop_front();
            if sessions.by_pid.get(&pid).is_some_and(|kept| kept.at == at) {
                sessions.by_pid.remove(&pid);
            }
        }
    }

    /// Whether a dropped socket is kept under `pid` (and not yet expired).
    pub fn has(&self, pid: &str) -> bool {
        let mut sessions = lock(&self.sessions);
        self.expire(&mut sessions, Instant::now());
        sessions.by_pid.contains_key(pid)
    }

    /// Takes the dropped socket `claim` names, with the packets it missed, and hands them to
    /// `admit` while no packet can be recorded: whatever `admit` adds to the namespace sees
    /// every later packet live. `admit` gets `None` when there is nothing to recover: unknown
    /// or expired pid, an offset the backlog no longer reaches. A claim is used once.
    pub fn restore<R>(&self, claim: Option<&Claim>, admit: impl FnOnce(Option<Restored>) -> R) -> R {
        let backlog = lock(&self.backlog);
        let restored = claim.and_then(|claim| self.take(&backlog, claim));
        admit(restored)
    }

    fn take(&self, backlog: &Backlog, claim: &Claim) -> Option<Restored> {
        let kept = {
            let mut sessions = lock(&self.sessions);
            self.expire(&mut sessions, Instant::now());
            sessions.by_pid.remove(claim.pid.as_str())?
        };
        let next = self.next_seq.load(Ordering::SeqCst);
        let start = match &claim.offset {
            Some(offset) => offset.parse::<u64>().ok()?.checked_add(1)?,
            None => kept.dropped.first_queued.unwrap_or(kept.resume_from),
        };
        let first_kept = next - backlog.entries.len() as u64;
        if start < first_kept || start > next {
            tracing::debug!(pid = claim.pid, start, first_kept, "backlog no longer covers the gap; not recovered");
            return None;
        }
        let Dropped { id, rooms, .. } = &kept.dropped;
        let missed = backlog
            .entries
            .iter()
            .skip((start - first_kept) as usize)
            .filter(|entry| entry.target.includes(id, rooms))
            .map(|entry| (entry.seq, entry.encoded.clone()))
            .collect();
        Some(Restored { dropped: kept.dropped, missed })
    }

    #[cfg(test)]
    fn backlog_len(&self) -> usize {
        lock(&self.backlog).entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::Frame;

    fn recovery(config: RecoveryConfig) -> Recovery {
        Recovery::new(config)
    }

    fn record(recovery: &Recovery, target: Target, text: &str) -> u64 {
        recovery.record(target, |offset| Encoded::One(Frame::message(&format!("{text}@{offset}"))), |seq, _| seq)
    }

    fn dropped(id: &str, rooms: &[&str]) -> Dropped {
        Dropped {
            id: id.into(),
            pid: format!("pid-{id}").into(),
            rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
            extensions: Extensions::new(),
            first_queued: None,
        }
    }

    fn claim(id: &str, offset: Option<u64>) -> Claim {
        Claim { pid: format!("pid-{id}"), offset: offset.map(|o| o.to_string()) }
    }

    fn missed(recovery: &Recovery, claim: &Claim) -> Option<Vec<u64>> {
        recovery.restore(Some(claim), |r| r.map(|r| r.missed.iter().map(|(seq, _)| *seq).collect()))
    }

    fn room(name: &str) -> Target {
        Target { rooms: vec![name.into()], ..Target::default() }
    }

    #[test]
    fn replays_what_the_rooms_missed_after_the_offset_once() {
        let r = recovery(RecoveryConfig::default());
        let first = record(&r, room("a"), "one");
        record(&r, room("b"), "not ours");
        r.keep(|| dropped("s", &["a"]));
        let third = record(&r, room("a"), "two");
        let fourth = record(&r, Target::default(), "everyone");
        let fifth = record(&r, Target::socket(&"s".into()), "direct");
        record(&r, Target { except_socket: Some("s".into()), ..Target::default() }, "not to s");
        record(&r, Target { except: vec!["a".into()], ..Target::default() }, "not to a");
        assert_eq!(missed(&r, &claim("s", Some(first))), Some(vec![third, fourth, fifth]));
        assert_eq!(missed(&r, &claim("s", Some(first))), None, "a claim is used once");
    }

    #[test]
    fn without_an_offset_replay_starts_at_the_first_packet_queued() {
        let r = recovery(RecoveryConfig::default());
        record(&r, room("a"), "before the socket");
        let mut never_read = dropped("s", &["a"]);
        never_read.first_queued = Some(record(&r, room("a"), "queued, never read"));
        r.keep(|| never_read);
        assert_eq!(missed(&r, &claim("s", None)).map(|m| m.len()), Some(1));

        r.keep(|| dropped("t", &["a"]));
        let after = record(&r, room("a"), "after t dropped");
        assert_eq!(missed(&r, &claim("t", None)), Some(vec![after]));
    }

    #[test]
    fn a_backlog_that_no_longer_reaches_the_offset_recovers_nothing() {
        let r = recovery(RecoveryConfig { max_backlog_packets: 3, ..RecoveryConfig::default() });
        let first = record(&r, room("a"), "seen");
        r.keep(|| dropped("s", &["a"]));
        r.keep(|| dropped("t", &["a"]));
        for _ in 0..3 {
            record(&r, room("a"), "missed");
        }
        assert_eq!(r.backlog_len(), 3);
        assert_eq!(missed(&r, &claim("s", Some(first))).map(|m| m.len()), Some(3), "exactly covered");
        record(&r, room("a"), "one too many");
        assert_eq!(missed(&r, &claim("t", Some(first))), None);
    }

    #[test]
    fn bytes_age_and_bad_claims_bound_what_is_kept() {
        let r = recovery(RecoveryConfig { max_backlog_bytes: 100, ..RecoveryConfig::default() });
        for _ in 0..50 {
            record(&r, room("a"), "0123456789");
        }
        // Each is `40123456789@NN`, 14 bytes: 7 fit in 100.
        assert_eq!(r.backlog_len(), 7);

        let r = recovery(RecoveryConfig { max_disconnection: Duration::from_millis(20), ..RecoveryConfig::default() });
        let seen = record(&r, room("a"), "seen");
        r.keep(|| dropped("s", &["a"]));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!r.has("pid-s"));
        assert_eq!(missed(&r, &claim("s", Some(seen))), None, "expired");
        record(&r, room("a"), "trims the old one");
        assert_eq!(r.backlog_len(), 1);

        let r = recovery(RecoveryConfig { max_sessions: 2, ..RecoveryConfig::default() });
        for id in ["a", "b", "c"] {
            r.keep(|| dropped(id, &[]));
        }
        assert!(!r.has("pid-a") && r.has("pid-b") && r.has("pid-c"));

        let r = recovery(RecoveryConfig::default());
        for offset in ["x", "-1", "99999999999999999999", "18446744073709551615", "7"] {
            r.keep(|| dropped("s", &[]));
            let claim = Claim { pid: "pid-s".into(), offset: Some(offset.into()) };
            assert_eq!(missed(&r, &claim), None, "offset {offset}");
        }
        r.keep(|| dropped("s", &[]));
        assert_eq!(missed(&r, &claim("s", Some(0))), Some(vec![]), "offset 0: nothing sent yet");
    }
}
