//! The outgoing queue: bounded by messages and bytes, with an overflow
//! policy, per-message time-to-live and "never replay". No I/O and no clock:
//! the time comes in as an argument, and every message that leaves other
//! than by being sent goes to a `dropped` callback with its reason.

use std::collections::VecDeque;
use std::time::Duration;

use sockeye_proto::Message;
use tokio::time::Instant;

use super::event::DropReason;

/// How many messages may wait to be sent. Both limits apply; a message
/// counts its payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimit {
    /// Default 1024 messages: a few seconds of a chatty client's output.
    pub messages: usize,
    /// Default 16 MiB: [`Config::max_write_buffer`](crate::Config::max_write_buffer),
    /// what one connection may hold unwritten anyway.
    pub bytes: usize,
}

impl Default for QueueLimit {
    fn default() -> Self {
        QueueLimit {
            messages: 1024,
            bytes: 16 << 20,
        }
    }
}

/// What [`ReconnectingClient::send`](super::ReconnectingClient::send) does
/// when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Drop the oldest queued messages until the new one fits; each is
    /// reported as [`DropReason::Overflow`]. For state updates where only
    /// the latest matters.
    DropOldest,
    /// Drop the new message (reported as [`DropReason::Overflow`]); what is
    /// queued stays. For samples where the earliest matter most.
    DropNewest,
    /// Refuse the new message: `send` returns
    /// [`QueueError::Full`](super::QueueError::Full) with it. The default:
    /// nothing is lost without the caller knowing at once.
    Error,
}

/// Options of one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Drop the message, reported as [`DropReason::Expired`], if it has not
    /// been written to a connection this long after `send`. Default `None`:
    /// it waits as long as it takes.
    pub ttl: Option<Duration>,
    /// Send the message only on the connection that is up when `send` is
    /// called: if none is, or that one drops before the message is written,
    /// drop it ([`DropReason::NeverReplay`]) instead of sending it after a
    /// reconnect. For messages that mean nothing on a new connection
    /// (typing indicators, replies to a request of the old one).
    pub never_replay: bool,
}

impl SendOptions {
    /// Sets the time-to-live.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Marks the message as never replayed on a new connection.
    pub fn never_replay(mut self) -> Self {
        self.never_replay = true;
        self
    }
}

#[derive(Debug)]
struct Queued {
    message: Message,
    expires: Option<Instant>,
    replay: bool,
    /// Written by the client itself (subscribe, unsubscribe) for the current
    /// connection: not counted against the limits, never reported.
    control: bool,
}

#[derive(Debug)]
pub(crate) struct Queue {
    items: VecDeque<Queued>,
    /// Messages and payload bytes of the non-control items.
    len: usize,
    bytes: usize,
    limit: QueueLimit,
    policy: OverflowPolicy,
    /// No item expires before this (it may be stale-early after a pop).
    next_expiry: Option<Instant>,
}

impl Queue {
    pub(crate) fn new(limit: QueueLimit, policy: OverflowPolicy) -> Self {
        Queue {
            items: VecDeque::new(),
            len: 0,
            bytes: 0,
            limit,
            policy,
            next_expiry: None,
        }
    }

    /// Queued messages (not counting the client's own control frames).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Payload bytes of the queued messages.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When the earliest time-to-live may run out.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.next_expiry
    }

    /// Queues `message`, applying the overflow policy. `Err` gives the
    /// message back (policy [`OverflowPolicy::Error`]).
    pub(crate) fn push(
        &mut self,
        message: Message,
        options: SendOptions,
        now: Instant,
        dropped: &mut impl FnMut(DropReason, Message),
    ) -> Result<(), Message> {
        let size = message.len();
        let fits = |q: &Queue| q.len < q.limit.messages && q.bytes + size <= q.limit.bytes;
        if !fits(self) {
            // Expired messages should not make a new one overflow.
            self.expire(now, dropped);
        }
        if !fits(self) {
            let could_ever_fit = self.limit.messages > 0 && size <= self.limit.bytes;
            match self.policy {
                OverflowPolicy::Error => return Err(message),
                OverflowPolicy::DropOldest if could_ever_fit => {
                    while !fits(self) {
                        let Some(oldest) = self.remove_oldest_user_item() else {
                            break;
                        };
                        dropped(DropReason::Overflow, oldest.message);
                    }
                }
                OverflowPolicy::DropOldest | OverflowPolicy::DropNewest => {
                    dropped(DropReason::Overflow, message);
                    return Ok(());
                }
            }
        }
        let expires = options.ttl.map(|ttl| now + ttl);
        if let Some(at) = expires {
            self.next_expiry = Some(self.next_expiry.map_or(at, |next| next.min(at)));
        }
        self.len += 1;
        self.bytes += size;
        self.items.push_back(Queued {
            message,
            expires,
            replay: !options.never_replay,
            control: false,
        });
        Ok(())
    }

    /// Queues a frame of the client's own for the current connection.
    pub(crate) fn push_control(&mut self, message: Message) {
        self.items.push_back(Queued {
            message,
            expires: None,
            replay: false,
            control: true,
        });
    }

    /// The next message to write; expired ones on the way are dropped.
    pub(crate) fn pop(
        &mut self,
        now: Instant,
        dropped: &mut impl FnMut(DropReason, Message),
    ) -> Option<Message> {
        while let Some(item) = self.items.pop_front() {
            if !item.control {
                self.len -= 1;
                self.bytes -= item.message.len();
            }
            if item.expires.is_some_and(|at| at <= now) {
                dropped(DropReason::Expired, item.message);
                continue;
            }
            if self.items.is_empty() {
                self.next_expiry = None;
            }
            return Some(item.message);
        }
        self.next_expiry = None;
        None
    }

    /// Drops every message whose time-to-live has run out.
    pub(crate) fn expire(&mut self, now: Instant, dropped: &mut impl FnMut(DropReason, Message)) {
        if self.next_expiry.is_none_or(|next| next > now) {
            return;
        }
        self.remove_where(
            |item| item.expires.is_some_and(|at| at <= now),
            |item| dropped(DropReason::Expired, item.message),
        );
    }

    /// The connection dropped: what was meant only for it goes.
    pub(crate) fn disconnected(&mut self, dropped: &mut impl FnMut(DropReason, Message)) {
        self.remove_where(
            |item| !item.replay,
            |item| {
                if !item.control {
                    dropped(DropReason::NeverReplay, item.message)
                }
            },
        );
    }

    /// The client ended: everything goes.
    pub(crate) fn drain(
        &mut self,
        reason: DropReason,
        dropped: &mut impl FnMut(DropReason, Message),
    ) {
        self.remove_where(
            |_| true,
            |item| {
                if !item.control {
                    dropped(reason, item.message)
                }
            },
        );
    }

    fn remove_oldest_user_item(&mut self) -> Option<Queued> {
        let index = self.items.iter().position(|item| !item.control)?;
        let item = self.items.remove(index)?;
        self.len -= 1;
        self.bytes -= item.message.len();
        Some(item)
    }

    /// Removes the items `remove` picks, in order, handing each to `then`;
    /// recomputes the counts and the next expiry.
    fn remove_where(
        &mut self,
        mut remove: impl FnMut(&Queued) -> bool,
        mut then: impl FnMut(Queued),
    ) {
        let mut kept = VecDeque::with_capacity(self.items.len());
        self.len = 0;
        self.bytes = 0;
        self.next_expiry = None;
        for item in self.items.drain(..) {
            if remove(&item) {
                then(item);
                continue;
            }
            if !item.control {
                self.len += 1;
                self.bytes += item.message.len();
            }
            if let Some(at) = item.expires {
                self.next_expiry = Some(self.next_expiry.map_or(at, |next| next.min(at)));
            }
            kept.push_back(item);
        }
        self.items = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Log = Vec<(DropReason, String)>;

    fn text(m: &Message) -> String {
        match m {
            Message::Text(t) => t.as_str().to_string(),
            other => format!("{other:?}"),
        }
    }

    fn queue(messages: usize, bytes: usize, policy: OverflowPolicy) -> Queue {
        Queue::new(QueueLimit { messages, bytes }, policy)
    }

    fn push(
        q: &mut Queue,
        log: &mut Log,
        s: &str,
        options: SendOptions,
        now: Instant,
    ) -> Result<(), String> {
        q.push(Message::text(s), options, now, &mut |r, m| {
            log.push((r, text(&m)))
        })
        .map_err(|m| text(&m))
    }

    fn pop_all(q: &mut Queue, log: &mut Log, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| q.pop(now, &mut |r, m| log.push((r, text(&m)))))
            .map(|m| text(&m))
            .collect()
    }

    #[test]
    fn messages_come_out_in_order() {
        let now = Instant::now();
        let (mut q, mut log) = (queue(10, 1000, OverflowPolicy::Error), Log::new());
        for s in ["a", "b", "c"] {
            push(&mut q, &mut log, s, SendOptions::default(), now).unwrap();
        }
        assert_eq!((q.len(), q.bytes()), (3, 3));
        assert_eq!(pop_all(&mut q, &mut log, now), ["a", "b", "c"]);
        assert!(log.is_empty());
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }

    #[test]
    fn error_policy_gives_the_message_back() {
        let now = Instant::now();
        let (mut q, mut log) = (queue(2, 1000, OverflowPolicy::Error), Log::new());
        push(&mut q, &mut log, "1", SendOptions::default(), now).unwrap();
        push(&mut q, &mut log, "2", SendOptions::default(), now).unwrap();
        assert_eq!(
            push(&mut q, &mut log, "3", SendOptions::default(), now),
            Err("3".into())
        );
        assert!(log.is_empty());
        assert_eq!(pop_all(&mut q, &mut log, now), ["1", "2"]);
    }

    #[test]
    fn drop_oldest_makes_room() {
        let now = Instant::now();
        let (mut q, mut log) = (queue(3, 1000, OverflowPolicy::DropOldest), Log::new());
        for s in ["1", "2", "3", "4", "5"] {
            push(&mut q, &mut log, s, SendOptions::default(), now).unwrap();
        }
        assert_eq!(
            log,
            [
                (DropReason::Overflow, "1".into()),
                (DropReason::Overflow, "2".into())
            ]
        );
        log.clear();
        assert_eq!(pop_all(&mut q, &mut log, now), ["3", "4", "5"]);
    }

    #[test]
    fn drop_newest_keeps_what_is_queued() {
        let now = Instant::now();
        let (mut q, mut log) = (queue(3, 1000, OverflowPolicy::DropNewest), Log::new());
        for s in ["1", "2", "3", "4", "5"] {
            push(&mut q, &mut log, s, SendOptions::default(), now).unwrap();
        }
        assert_eq!(
            log,
            [
                (DropReason::Overflow, "4".into()),
                (DropReason::Overflow, "5".into())
            ]
        );
        log.clear();
        assert_eq!(pop_all(&mut q, &mut log, now), ["1", "2", "3"]);
    }

    #[test]
    fn the_byte_limit_counts_payloads() {
        let now = Instant::now();
        let (mut q, mut log) = (queue(100, 10, OverflowPolicy::DropOldest), Log::new());
        push(&mut q, &mut log, "aaaa", SendOptions::default(), now).unwrap();
        push(&mut q, &mut log, "bbbb", SendOptions::default(), now).unwrap();
        push(&mut q, &mut log, "cccccc", SendOptions::default(), now).unwrap();
        assert_eq!(
            log,
            [(DropReason::Overflow, "aaaa".into())],
            "4 + 6 fit in 10"
        );
        assert_eq!(q.bytes(), 10);
        push(&mut q, &mut log, "ddddddd", SendOptions::default(), now).unwrap();
        assert_eq!(
            log[1..],
            [
                (DropReason::Overflow, "bbbb".into()),
                (DropReason::Overflow, "cccccc".into())
            ]
        );
        assert_eq!((q.len(), q.bytes()), (1, 7));
        // Bigger than the whole limit: dropped by itself, nothing evicted for it.
        log.clear();
        push(
            &mut q,
            &mut log,
            "xxxxxxxxxxxx",
            SendOptions::default(),
            now,
        )
        .unwrap();
        assert_eq!(log, [(DropReason::Overflow, "xxxxxxxxxxxx".into())]);
        assert_eq!((q.len(), q.bytes()), (1, 7));
        let mut strict = queue(100, 10, OverflowPolicy::Error);
        assert!(push(
            &mut strict,
            &mut log,
            "xxxxxxxxxxxx",
            SendOptions::default(),
            now
        )
        .is_err());
    }

    #[test]
    fn expired_messages_are_reported_not_sent() {
        let t0 = Instant::now();
        let (mut q, mut log) = (queue(10, 1000, OverflowPolicy::Error), Log::new());
        let short = SendOptions::default().ttl(Duration::from_secs(1));
        let long = SendOptions::default().ttl(Duration::from_secs(10));
        push(&mut q, &mut log, "short", short, t0).unwrap();
        push(&mut q, &mut log, "forever", SendOptions::default(), t0).unwrap();
        push(&mut q, &mut log, "long", long, t0).unwrap();
        assert_eq!(q.next_expiry(), Some(t0 + Duration::from_secs(1)));
        q.expire(t0 + Duration::from_millis(999), &mut |r, m| {
            log.push((r, text(&m)))
        });
        assert!(log.is_empty());
        q.expire(t0 + Duration::from_secs(1), &mut |r, m| {
            log.push((r, text(&m)))
        });
        assert_eq!(log, [(DropReason::Expired, "short".into())]);
        assert_eq!(q.next_expiry(), Some(t0 + Duration::from_secs(10)));
        log.clear();
        // pop skips (and reports) what expired since the last sweep.
        assert_eq!(
            pop_all(&mut q, &mut log, t0 + Duration::from_secs(11)),
            ["forever"]
        );
        assert_eq!(log, [(DropReason::Expired, "long".into())]);
    }

    #[test]
    fn expired_messages_make_room_before_the_policy_applies() {
        let t0 = Instant::now();
        let (mut q, mut log) = (queue(1, 1000, OverflowPolicy::Error), Log::new());
        let ttl = SendOptions::default().ttl(Duration::from_secs(1));
        push(&mut q, &mut log, "old", ttl, t0).unwrap();
        push(
            &mut q,
            &mut log,
            "new",
            SendOptions::default(),
            t0 + Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(log, [(DropReason::Expired, "old".into())]);
    }

    #[test]
    fn a_disconnect_drops_never_replay_and_control_frames_only() {
        let now = Instant::now();
        let (mut q, mut log) = (queue(10, 1000, OverflowPolicy::Error), Log::new());
        push(&mut q, &mut log, "keep1", SendOptions::default(), now).unwrap();
        push(
            &mut q,
            &mut log,
            "once",
            SendOptions::default().never_replay(),
            now,
        )
        .unwrap();
        q.push_control(Message::text("subscribe"));
        push(&mut q, &mut log, "keep2", SendOptions::default(), now).unwrap();
        assert_eq!(q.len(), 3, "control frames are not counted");
        q.disconnected(&mut |r, m| log.push((r, text(&m))));
        assert_eq!(log, [(DropReason::NeverReplay, "once".into())]);
        log.clear();
        assert_eq!(pop_all(&mut q, &mut log, now), ["keep1", "keep2"]);
    }

    #[test]
    fn control_frames_are_never_evicted_or_counted() {
        let now = Instant::now();
        let (mut q, mut log) = (queue(1, 1000, OverflowPolicy::DropOldest), Log::new());
        q.push_control(Message::text("ctl"));
        push(&mut q, &mut log, "a", SendOptions::default(), now).unwrap();
        push(&mut q, &mut log, "b", SendOptions::default(), now).unwrap();
        assert_eq!(log, [(DropReason::Overflow, "a".into())]);
        log.clear();
        assert_eq!(pop_all(&mut q, &mut log, now), ["ctl", "b"]);
    }

    #[test]
    fn drain_reports_everything_left() {
        let now = Instant::now();
        let (mut q, mut log) = (queue(10, 1000, OverflowPolicy::Error), Log::new());
        push(&mut q, &mut log, "a", SendOptions::default(), now).unwrap();
        q.push_control(Message::text("ctl"));
        push(&mut q, &mut log, "b", SendOptions::default(), now).unwrap();
        q.drain(DropReason::Closed, &mut |r, m| log.push((r, text(&m))));
        assert_eq!(
            log,
            [
                (DropReason::Closed, "a".into()),
                (DropReason::Closed, "b".into())
            ]
        );
        assert!(q.is_empty());
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }
}
