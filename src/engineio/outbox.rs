//! A session's outgoing queue: bounded, drained by one transport at a time, and holding no
//! memory while empty.
//!
//! tokio's bounded channel allocates a block of 32 slots up front, about 1.5 KiB per session
//! whether anything is ever sent; an idle connection should cost as little as possible, so this
//! is a plain deque under a lock, with a [`Notify`] for the reader.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::session::Outbound;

/// Capacity above which an emptied queue gives its memory back (a burst is over).
const KEEP_CAPACITY: usize = 16;

pub(super) struct Outbox {
    queue: Mutex<VecDeque<Outbound>>,
    capacity: usize,
    ready: Notify,
    /// Held by the transport that drains the queue: a parked polling GET, or the websocket.
    reader: tokio::sync::Mutex<()>,
}

/// The one transport draining the queue, for as long as it holds this.
pub(super) struct Reader<'a> {
    outbox: &'a Outbox,
    _turn: tokio::sync::MutexGuard<'a, ()>,
}

/// The queue already holds `capacity` items.
#[derive(Debug)]
pub(super) struct Full;

impl Outbox {
    pub(super) fn new(capacity: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ready: Notify::new(),
            reader: tokio::sync::Mutex::new(()),
        }
    }

    pub(super) fn push(&self, item: Outbound) -> Result<(), Full> {
        {
            let mut queue = self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if queue.len() >= self.capacity {
                return Err(Full);
            }
            queue.push_back(item);
        }
        // Stores a permit when the reader is not waiting yet, so no wakeup is lost.
        self.ready.notify_one();
        Ok(())
    }

    /// The reader's turn, if no other transport has it.
    pub(super) fn try_reader(&self) -> Option<Reader<'_>> {
        let turn = self.reader.try_lock().ok()?;
        Some(Reader { outbox: self, _turn: turn })
    }

    /// The reader's turn, once the transport holding it lets go.
    pub(super) async fn reader(&self) -> Reader<'_> {
        Reader { outbox: self, _turn: self.reader.lock().await }
    }
}

impl Reader<'_> {
    /// Moves up to `limit` queued items into `into`; how many it moved.
    pub(super) fn drain(&mut self, into: &mut Vec<Outbound>, limit: usize) -> usize {
        let mut queue = self.outbox.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = queue.len().min(limit);
        into.extend(queue.drain(..count));
        if queue.is_empty() && queue.capacity() > KEEP_CAPACITY {
            queue.shrink_to_fit();
        }
        count
    }

    /// Waits for at least one item, then moves up to `limit` into `into`.
    pub(super) async fn recv_many(&mut self, into: &mut Vec<Outbound>, limit: usize) -> usize {
        loop {
            let moved = self.drain(into, limit);
            if moved > 0 {
                return moved;
            }
            self.outbox.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::Frame;

    fn item(text: &str) -> Outbound {
        Outbound::One(Frame::message(text))
    }

    #[tokio::test]
    async fn bounded_in_order_and_one_reader_at_a_time() {
        let outbox = Outbox::new(2);
        outbox.push(item("a")).unwrap();
        outbox.push(item("b")).unwrap();
        assert!(outbox.push(item("c")).is_err(), "a third item overflows a queue of 2");

        let mut reader = outbox.try_reader().unwrap();
        assert!(outbox.try_reader().is_none(), "a second transport must wait its turn");
        let mut got = Vec::new();
        assert_eq!(reader.recv_many(&mut got, 8).await, 2);
        let frames: Vec<&Frame> = got.iter().flat_map(|i| i.frames()).collect();
        assert_eq!(frames, [&Frame::message("a"), &Frame::message("b")]);
        drop(reader);
        assert!(outbox.try_reader().is_some());
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_push() {
        let outbox = std::sync::Arc::new(Outbox::new(8));
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                outbox.reader().await.recv_many(&mut got, 8).await
            })
        };
        tokio::task::yield_now().await;
        outbox.push(item("late")).unwrap();
        let moved = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(moved, 1);
    }

    #[test]
    fn an_emptied_queue_gives_back_a_burst() {
        let outbox = Outbox::new(1024);
        for _ in 0..200 {
            outbox.push(item("x")).unwrap();
        }
        let mut reader = outbox.try_reader().unwrap();
        let mut got = Vec::new();
        reader.drain(&mut got, usize::MAX);
        assert_eq!(got.len(), 200);
        assert!(outbox.queue.lock().unwrap().capacity() <= KEEP_CAPACITY);
    }
}
