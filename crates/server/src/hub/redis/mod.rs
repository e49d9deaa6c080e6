//! [`RedisBroker`]: topics, history and presence shared by every process of a
//! cluster through one Redis.
//!
//! ```text
//!  process A                      Redis                        process B
//!  publish ──EVALSHA publish.lua──► HINCRBY seq, XADD history,
//!                                   PUBLISH P:pub:<topic> ──┬──► pub/sub task ─► Deliver
//!  Deliver ◄── pub/sub task ◄───────────────────────────────┘   (PSUBSCRIBE P:pub:*)
//! ```
//!
//! - **One path, one order.** A publish is a Lua script that takes the next
//!   offset, appends to the topic's stream and publishes, atomically; every
//!   process, the publishing one included, hears it on its pub/sub connection
//!   and calls its `Deliver` once. So every process sees a topic's messages in
//!   position order, once each.
//! - **Positions.** A topic's epoch is a random string set once (`HSETNX`); if
//!   Redis loses the topic (restart without persistence, `FLUSHALL`) the next
//!   use makes a new epoch, and resumes from the old one get a gap.
//! - **History** is a Redis stream per topic whose entry IDs are `0-<offset>`,
//!   capped by [`RedisConfig::history_len`] and [`RedisConfig::history_age`].
//! - **Presence** is a sorted set per room of `<node>|<user>` scored by expiry;
//!   each process refreshes its own members, so a crashed process's members
//!   expire after [`RedisConfig::presence_ttl`] (and their `leave` is then
//!   announced). Presence is per user: a user's second connection, on any
//!   process, is silent.
//! - **Redis going away.** Commands fail with "Redis unavailable" within
//!   [`RedisConfig::command_timeout`] and the command connection reconnects on
//!   its own; the pub/sub task logs the loss, reconnects with backoff, and on
//!   reconnecting replays from history what this process missed while it was
//!   away (when history still has it; after Redis lost its data, what the
//!   new epoch has), so delivery stays once per message. Presence is written
//!   back from this process's memory. Nothing panics and nothing waits
//!   forever.
//!
//! Needs Redis 6.2 or later, standalone (or a primary): the scripts touch two
//! keys per topic without hash tags, so Redis Cluster is not supported. Key
//! names and the message format are in `wire.rs`.

mod config;
mod presence;
mod pubsub;
mod scripts;
mod wire;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::{Client, RedisError, ScriptInvocation, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use config::RedisConfig;

use super::broker::{BoxFuture, Broker, BrokerError, Deliver};
use super::types::{Kind, Position, Publication, Resume};
use scripts::Scripts;
use wire::Keys;

/// The oldest Redis with everything the scripts use (`XTRIM ... MINID`, 6.2).
const MIN_REDIS: (u32, u32) = (6, 2);

/// A [`Broker`] that relays through Redis, so that clients on different
/// processes share topics, history and presence. See the module docs for how.
///
/// Made with [`RedisBroker::connect`]; its background tasks stop when it is
/// dropped (without announcing anyone's `leave`: to other processes that looks
/// like a crash, and this process's members expire after
/// [`RedisConfig::presence_ttl`]).
pub struct RedisBroker {
    inner: Arc<Inner>,
    /// The subscription `connect` made, waiting for `start`; messages that
    /// arrive in between wait in it.
    subscription: Mutex<Option<PubSub>>,
    runtime: tokio::runtime::Handle,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What the broker's methods and its background tasks share.
struct Inner {
    /// The URL with any password hidden, for messages.
    url: String,
    client: Client,
    commands: ConnectionManager,
    config: RedisConfig,
    node: String,
    keys: Keys,
    scripts: Scripts,
    presence: presence::Local,
    /// Wakes the presence task to rewrite this process's members at once
    /// (after a reconnect, when Redis may have lost them).
    resync: Notify,
}

impl RedisBroker {
    /// Connects to the Redis at `url` (`redis://[:password@]host[:port][/db]`,
    /// plain TCP: `rediss://` is not built in) and subscribes to this
    /// cluster's channels. Publications are delivered once
    /// [`Broker::start`] is called; call it soon, as they are held until then.
    ///
    /// Fails with "cannot reach Redis at URL: ..." when Redis does not answer
    /// within [`RedisConfig::command_timeout`] (after a few quick retries).
    pub async fn connect(url: &str, config: RedisConfig) -> Result<Self, BrokerError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BrokerError("RedisBroker::connect must run inside a tokio runtime".into())
        })?;
        let shown = redact(url);
        config
            .check()
            .map_err(|e| BrokerError(format!("Redis broker configuration: {e}")))?;
        let client = Client::open(url)
            .map_err(|e| BrokerError(format!("invalid Redis URL {shown}: {e}")))?;
        let keys = Keys::new(&config.prefix);
        let unreachable =
            |why: String| BrokerError(format!("cannot reach Redis at {shown}: {why}"));

        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.command_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let setup = async {
            let mut commands =
                ConnectionManager::new_with_config(client.clone(), manager_config).await?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut commands)
                .await?;
            let subscription = pubsub::subscribe(&client, &keys).await?;
            Ok::<_, RedisError>((commands, info, subscription))
        };
        // Three command timeouts: connect, INFO, and the pub/sub connection.
        let (commands, info, subscription) =
            match tokio::time::timeout(config.command_timeout * 3, setup).await {
                Err(_) => {
                    return Err(unreachable(format!(
                        "no answer within {:?}",
                        config.command_timeout * 3
                    )))
                }
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Ok(Ok(connected)) => connected,
            };
        let version = redis_version(&info);
        if version.is_some_and(|v| v < MIN_REDIS) {
            let (major, minor) = version.unwrap_or_default();
            return Err(BrokerError(format!(
                "Redis at {shown} is version {major}.{minor}; sockeye needs {}.{} or later",
                MIN_REDIS.0, MIN_REDIS.1
            )));
        }

        let node = random_id();
        tracing::info!(url = %shown, node = %node, prefix = %config.prefix, "connected to Redis");
        let inner = Arc::new(Inner {
            url: shown,
            client,
            commands,
            config,
            node,
            keys,
            scripts: Scripts::new(),
            presence: presence::Local::default(),
            resync: Notify::new(),
        });
        let refresher = runtime.spawn(presence::refresh_loop(inner.clone()));
        Ok(RedisBroker {
            inner,
            subscription: Mutex::new(Some(subscription)),
            runtime,
            tasks: Mutex::new(vec![refresher]),
        })
    }

    /// This process's id in the cluster (random, 16 hex digits); it names the
    /// process in Redis's presence sets and in logs.
    pub fn node_id(&self) -> &str {
        &self.inner.node
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &self.inner.url)
            .field("node", &self.inner.node)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Broker for RedisBroker {
    fn start(&self, deliver: Deliver) {
        let Some(subscription) = lock(&self.subscription).take() else {
            tracing::error!(node = %self.inner.node, "RedisBroker::start called twice; ignoring the second call");
            return;
        };
        let task = self
            .runtime
            .spawn(pubsub::run(self.inner.clone(), deliver, subscription));
        lock(&self.tasks).push(task);
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        payload: Bytes,
        text: bool,
        from: Option<String>,
    ) -> BoxFuture<'a, Result<Position, BrokerError>> {
        Box::pin(async move {
            let inner = &*self.inner;
            let header = wire::message_header(topic, text, from.as_deref(), &inner.node);
            let mut invocation = inner.scripts.publish.prepare_invoke();
            invocation
                .key(inner.keys.meta(topic))
                .key(inner.keys.history(topic))
                .arg(inner.keys.channel(topic))
                .arg(random_id())
                .arg(header)
                .arg(&payload[..])
                .arg(if text { "1" } else { "0" })
                .arg(if from.is_some() { "1" } else { "0" })
                .arg(from.as_deref().unwrap_or(""))
                .arg(inner.config.kept())
                .arg(inner.config.age_ms());
            let reply = inner.invoke("publish", &invocation).await?;
            parse_position(&reply, 0).ok_or_else(|| bad_reply("publish", &reply))
        })
    }

    fn latest<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Position, BrokerError>> {
        Box::pin(self.inner.latest(topic))
    }

    fn history<'a>(
        &'a self,
        topic: &'a str,
        since: &'a Position,
    ) -> BoxFuture<'a, Result<Resume, BrokerError>> {
        Box::pin(async move {
            Ok(match self.inner.history(topic, since).await? {
                Some(publications) => {
                    Resume::Replay(publications.into_iter().map(Arc::new).collect())
                }
                None => Resume::Gap,
            })
        })
    }

    fn join<'a>(
        &'a self,
        room: &'a str,
        user: &'a str,
        conn: u64,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(presence::join(&self.inner, room, user, conn))
    }

    fn leave<'a>(
        &'a self,
        room: &'a str,
        user: &'a str,
        conn: u64,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(presence::leave(&self.inner, room, user, conn))
    }

    fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<String>, BrokerError>> {
        Box::pin(async move {
            let mut users = presence::apply(&self.inner, room, &[], &[]).await?;
            users.sort_unstable();
            Ok(users)
        })
    }
}

impl Inner {
    /// Runs one script, bounded by the command timeout.
    async fn invoke(
        &self,
        what: &str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<Value, BrokerError> {
        let attempt = async {
            let mut commands = self.commands.clone();
            match invocation.invoke_async(&mut commands).await {
                // Refused: the script never reached Redis. The connection
                // manager answers so once with the error of a reconnect that
                // failed while Redis was away, and starts a new one: the
                // second try waits for it (safe: nothing ran twice).
                Err(e) if e.is_connection_refusal() => invocation.invoke_async(&mut commands).await,
                other => other,
            }
        };
        match tokio::time::timeout(self.config.command_timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if is_unavailable(&e) => {
                tracing::debug!(node = %self.node, error = %e, "Redis {what} failed");
                Err(BrokerError(format!(
                    "Redis unavailable: {what} at {}: {e}",
                    self.url
                )))
            }
            Ok(Err(e)) => Err(BrokerError(format!("Redis error: {what}: {e}"))),
            Err(_) => Err(BrokerError(format!(
                "Redis unavailable: {what} at {}: no answer within {:?}",
                self.url, self.config.command_timeout
            ))),
        }
    }

    /// The latest position of `topic` (see `latest.lua`).
    async fn latest(&self, topic: &str) -> Result<Position, BrokerError> {
        let mut invocation = self.scripts.latest.prepare_invoke();
        invocation
            .key(self.keys.meta(topic))
            .key(self.keys.history(topic))
            .arg(random_id());
        let reply = self.invoke("latest", &invocation).await?;
        parse_position(&reply, 0).ok_or_else(|| bad_reply("latest", &reply))
    }

    /// The messages of `topic` after `since`, or `None` for a gap (see
    /// `history.lua`).
    async fn history(
        &self,
        topic: &str,
        since: &Position,
    ) -> Result<Option<Vec<Publication>>, BrokerError> {
        let Some(first) = since.offset.checked_add(1) else {
            return Ok(None);
        };
        let mut invocation = self.scripts.history.prepare_invoke();
        invocation
            .key(self.keys.meta(topic))
            .key(self.keys.history(topic))
            .arg(random_id())
            .arg(&since.epoch)
            .arg(first.to_string())
            .arg(self.config.kept());
        let reply = self.invoke("history", &invocation).await?;
        let (latest, now, entries) =
            parse_history(&reply).ok_or_else(|| bad_reply("history", &reply))?;
        if latest.epoch != since.epoch || since.offset > latest.offset {
            return Ok(None);
        }
        let missed = latest.offset - since.offset;
        if missed > self.config.kept() as u64 || entries.len() as u64 != missed {
            return Ok(None);
        }
        let cutoff = now.saturating_sub(self.config.age_ms());
        let topic: Arc<str> = Arc::from(topic);
        let mut replay = Vec::with_capacity(entries.len());
        for (expected, entry) in (first..).zip(entries) {
            if entry.offset != expected || entry.time <= cutoff {
                return Ok(None);
            }
            let position = Position {
                epoch: latest.epoch.clone(),
                offset: entry.offset,
            };
            replay.push(Publication::new(
                topic.clone(),
                Some(position),
                entry.payload,
                entry.text,
                entry.from,
                Kind::Message,
            ));
        }
        Ok(Some(replay))
    }
}

/// Whether an error means "Redis is not there" rather than "Redis refused".
fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

fn bad_reply(what: &str, reply: &Value) -> BrokerError {
    BrokerError(format!(
        "Redis error: unexpected reply to {what}: {reply:?}"
    ))
}

/// `{epoch, offset, ...}` from a script, starting at `at`.
fn parse_position(reply: &Value, at: usize) -> Option<Position> {
    let Value::Array(items) = reply else {
        return None;
    };
    Some(Position {
        epoch: string(items.get(at)?)?,
        offset: string(items.get(at + 1)?)?.parse().ok()?,
    })
}

/// One history entry.
struct Entry {
    offset: u64,
    time: u64,
    payload: Bytes,
    text: bool,
    from: Option<String>,
}

/// `{epoch, seq, now, entries}` from `history.lua`.
fn parse_history(reply: &Value) -> Option<(Position, u64, Vec<Entry>)> {
    let latest = parse_position(reply, 0)?;
    let Value::Array(items) = reply else {
        return None;
    };
    let now = string(items.get(2)?)?.parse().ok()?;
    let Value::Array(raw) = items.get(3)? else {
        return None;
    };
    let mut entries = Vec::with_capacity(raw.len());
    for entry in raw {
        let Value::Array(parts) = entry else {
            return None;
        };
        let [id, Value::Array(fields)] = &parts[..] else {
            return None;
        };
        let mut parsed = Entry {
            offset: wire::offset_of_id(&string(id)?)?,
            time: 0,
            payload: Bytes::new(),
            text: false,
            from: None,
        };
        for pair in fields.chunks(2) {
            let [Value::BulkString(name), Value::BulkString(value)] = pair else {
                return None;
            };
            match &name[..] {
                b"payload" => parsed.payload = Bytes::copy_from_slice(value),
                b"text" => parsed.text = value == b"1",
                b"time" => parsed.time = std::str::from_utf8(value).ok()?.parse().ok()?,
                b"from" => parsed.from = Some(String::from_utf8(value.clone()).ok()?),
                _ => {}
            }
        }
        entries.push(parsed);
    }
    Some((latest, now, entries))
}

/// A string reply (bulk or simple).
fn string(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `redis_version:7.0.15` from `INFO server`, as (major, minor).
fn redis_version(info: &str) -> Option<(u32, u32)> {
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))?;
    let mut parts = version.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// 16 random hex digits: node ids and epochs.
fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The URL with its password (or whole user part) replaced by `***`.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
}

/// Locks a mutex, also after a panic elsewhere poisoned it (the data it
/// guards stays consistent: no code panics while holding it).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://user:pw@host"), "redis://***@host");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn versions_from_info() {
        assert_eq!(
            redis_version("# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n"),
            Some((7, 0))
        );
        assert_eq!(redis_version("nothing"), None);
    }

    #[test]
    fn history_replies_parse() {
        let bulk = |s: &[u8]| Value::BulkString(s.to_vec());
        let reply = Value::Array(vec![
            bulk(b"ep"),
            bulk(b"3"),
            bulk(b"1700000000000"),
            Value::Array(vec![Value::Array(vec![
                bulk(b"0-3"),
                Value::Array(vec![
                    bulk(b"payload"),
                    bulk(b"a\nb\xff"),
                    bulk(b"text"),
                    bulk(b"0"),
                    bulk(b"time"),
                    bulk(b"1700000000000"),
                    bulk(b"from"),
                    bulk(b"al"),
                ]),
            ])]),
        ]);
        let (latest, now, entries) = parse_history(&reply).unwrap();
        assert_eq!(
            latest,
            Position {
                epoch: "ep".into(),
                offset: 3
            }
        );
        assert_eq!(now, 1_700_000_000_000);
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].offset, &entries[0].payload[..], entries[0].text),
            (3, &b"a\nb\xff"[..], false)
        );
        assert_eq!(entries[0].from.as_deref(), Some("al"));
    }
}
