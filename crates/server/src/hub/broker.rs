//! Where publications go between processes. The embedded [`LocalBroker`] is
//! the default; the Redis broker shares topics, history and presence across
//! processes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::types::{Position, Publication, Resume};

/// A boxed future, as trait objects need.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Called by a broker for every publication that reaches this process,
/// including this process's own: the hub hands it to local subscribers.
pub type Deliver = Arc<dyn Fn(Publication) + Send + Sync>;

/// An error from the broker (Redis down, and the like).
#[derive(Debug, thiserror::Error)]
#[error("broker: {0}")]
pub struct BrokerError(pub String);

/// The message broker behind a hub.
///
/// Every publication is delivered exactly once to every process's `Deliver`
/// (so once per subscriber). Positions are assigned by the broker, in
/// publication order per topic.
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    /// Starts delivering publications to `deliver`. Called once by the hub.
    fn start(&self, deliver: Deliver);
    /// Publishes a message; returns its position.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        payload: Bytes,
        text: bool,
        from: Option<String>,
    ) -> BoxFuture<'a, Result<Position, BrokerError>>;
    /// The latest position of a topic (offset 0 when nothing was published).
    fn latest<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Position, BrokerError>>;
    /// The messages after `since`, or a gap.
    fn history<'a>(
        &'a self,
        topic: &'a str,
        since: &'a Position,
    ) -> BoxFuture<'a, Result<Resume, BrokerError>>;
    /// Records that `user` (connection `conn`, on this process) joined `room`,
    /// and announces it; returns the member count after the join.
    fn join<'a>(
        &'a self,
        room: &'a str,
        user: &'a str,
        conn: u64,
    ) -> BoxFuture<'a, Result<usize, BrokerError>>;
    /// The reverse of [`Broker::join`]; returns the member count after.
    fn leave<'a>(
        &'a self,
        room: &'a str,
        user: &'a str,
        conn: u64,
    ) -> BoxFuture<'a, Result<usize, BrokerError>>;
    /// The distinct user ids in `room`, across every process.
    fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<String>, BrokerError>>;
}
