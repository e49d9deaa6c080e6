//! The pub/sub task: hears every topic's channel and calls `Deliver` once per
//! publication, across losses of the connection.
//!
//! Per topic it remembers the last position it delivered. After a reconnect
//! it first replays from history what was published while it was away (the
//! live messages that arrive meanwhile wait in the subscription), then skips
//! live messages it already replayed. So a message is delivered once, in
//! order, unless history lost it too (then it is not delivered; the hub's
//! subscribers get a gap when they resume).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::PubSub;
use redis::{Client, RedisError, Value};

use super::wire::{self, Keys};
use super::Inner;
use crate::hub::broker::{BrokerError, Deliver};
use crate::hub::types::{Position, Publication};

/// How often an idle subscription is checked with a PING (a dead peer that
/// never closed the socket is noticed within this plus the command timeout).
const PING_EVERY: Duration = Duration::from_secs(5);
/// Reconnect backoff: first delay, and the most it grows to.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// While Redis stays away, how often that is said at `warn` (the attempts in
/// between are logged at `debug`).
const STILL_DOWN_EVERY: Duration = Duration::from_secs(30);

/// Opens a pub/sub connection subscribed to every topic of the cluster.
pub(super) async fn subscribe(client: &Client, keys: &Keys) -> Result<PubSub, RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.psubscribe(keys.pattern()).await?;
    Ok(pubsub)
}

/// The task: runs until the broker is dropped (which aborts it).
pub(super) async fn run(inner: Arc<Inner>, deliver: Deliver, subscription: PubSub) {
    let mut state = Delivered {
        deliver,
        last: HashMap::new(),
    };
    let mut subscription = Some(subscription);
    loop {
        let pubsub = match subscription.take() {
            Some(pubsub) => pubsub,
            None => {
                let pubsub = reconnect(&inner).await;
                tracing::info!(url = %inner.url, node = %inner.node, "reconnected to Redis");
                inner.resync.notify_one();
                state.catch_up(&inner).await;
                pubsub
            }
        };
        let why = state.pump(&inner, pubsub).await;
        tracing::warn!(url = %inner.url, node = %inner.node, "lost Redis connection: {why}; reconnecting");
    }
}

/// Connects and subscribes again, with backoff, until it works.
async fn reconnect(inner: &Inner) -> PubSub {
    let timeout = inner.config.command_timeout;
    let mut delay = BACKOFF_MIN;
    let since = Instant::now();
    let mut said = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let why = match tokio::time::timeout(timeout, subscribe(&inner.client, &inner.keys)).await {
            Ok(Ok(pubsub)) => return pubsub,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        if said.elapsed() >= STILL_DOWN_EVERY {
            said = Instant::now();
            tracing::warn!(url = %inner.url, node = %inner.node, attempts, "still cannot reach Redis after {:?}: {why}", since.elapsed());
        } else {
            tracing::debug!(url = %inner.url, node = %inner.node, attempts, "cannot reach Redis: {why}; retrying in {delay:?}");
        }
        // Jitter, so that the processes of a cluster do not all come back at once.
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        tokio::time::sleep(delay.mul_f64(jitter)).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// What was delivered: the callback, and the last position per topic.
struct Delivered {
    deliver: Deliver,
    last: HashMap<Arc<str>, Position>,
}

impl Delivered {
    /// Delivers what arrives until the connection is lost; returns why.
    async fn pump(&mut self, inner: &Inner, pubsub: PubSub) -> String {
        let (mut sink, mut stream) = pubsub.split();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.received(inner, message.get_channel_name(), message.get_payload_bytes()),
                    None => return "the connection closed".into(),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(inner.config.command_timeout, sink.ping::<Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return format!("PING failed: {e}"),
                        Err(_) => return format!("no answer to PING within {:?}", inner.config.command_timeout),
                    }
                }
            }
        }
    }

    /// One message from a channel.
    fn received(&mut self, inner: &Inner, channel: &str, payload: &[u8]) {
        let incoming = match wire::decode(payload) {
            Ok(incoming) => incoming,
            Err(e) => {
                tracing::warn!(node = %inner.node, channel, "ignoring a message that is not sockeye's: {e}");
                return;
            }
        };
        let topic = self.topic(&incoming.topic);
        if let Some(position) = &incoming.position {
            if let Some(last) = self.last.get(&topic) {
                if last.epoch == position.epoch && position.offset <= last.offset {
                    return; // replayed already after a reconnect
                }
            }
            self.last.insert(topic.clone(), position.clone());
        }
        (self.deliver)(incoming.into_publication(topic));
    }

    /// The topic's name, shared with the map's key when it is known.
    fn topic(&self, name: &str) -> Arc<str> {
        match self.last.get_key_value(name) {
            Some((topic, _)) => topic.clone(),
            None => Arc::from(name),
        }
    }

    /// After a reconnect: delivers, per topic, what was published since the
    /// last delivered position, as far as history has it. When Redis lost
    /// the topic meanwhile (a new epoch), everything of the new epoch was
    /// published while this process was away: that is delivered instead.
    async fn catch_up(&mut self, inner: &Inner) {
        let known: Vec<(Arc<str>, Position)> = self
            .last
            .iter()
            .map(|(t, p)| (t.clone(), p.clone()))
            .collect();
        let (mut replayed, mut lost) = (0usize, 0usize);
        for (topic, since) in known {
            match missed(inner, &topic, since).await {
                Ok(Some(publications)) => {
                    for publication in publications {
                        if let Some(position) = &publication.position {
                            self.last.insert(topic.clone(), position.clone());
                        }
                        replayed += 1;
                        (self.deliver)(publication);
                    }
                }
                Ok(None) => lost += 1,
                Err(e) => {
                    tracing::warn!(node = %inner.node, topic = %topic, "could not replay what was missed while Redis was away: {e}");
                    lost += 1;
                }
            }
        }
        if replayed > 0 || lost > 0 {
            tracing::info!(node = %inner.node, replayed, topics_with_gaps = lost, "caught up after reconnecting to Redis");
        }
    }
}

/// What `topic` had after `since`, or from the start of a new epoch; `None`
/// when history no longer has it.
async fn missed(
    inner: &Inner,
    topic: &str,
    since: Position,
) -> Result<Option<Vec<Publication>>, BrokerError> {
    if let Some(missed) = inner.history(topic, &since).await? {
        return Ok(Some(missed));
    }
    let current = inner.latest(topic).await?;
    if current.epoch == since.epoch {
        return Ok(None); // the same history, but more was missed than it keeps
    }
    inner
        .history(
            topic,
            &Position {
                epoch: current.epoch,
                offset: 0,
            },
        )
        .await
}
