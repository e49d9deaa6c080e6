//! [`RedisConfig`]: what the Redis broker keeps, for how long, and how long it
//! waits for Redis.

use std::time::Duration;

/// Settings of a [`RedisBroker`](super::RedisBroker). Every process of a
/// cluster should use the same `prefix`, `history_len` and `history_age`.
///
/// ```
/// # use std::time::Duration;
/// # use sockeye_server::hub::RedisConfig;
/// let config = RedisConfig::default().prefix("chat-prod").history_len(500);
/// assert_eq!(config.history_age, Duration::from_secs(300));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Start of every key and channel name (`<prefix>:history:<topic>`,
    /// `<prefix>:pub:<topic>`, ...). Default `"sockeye"`. Two clusters that
    /// share one Redis need different prefixes.
    pub prefix: String,
    /// Messages of history kept per topic for `since` resumes (as
    /// [`HubConfig::history_len`](crate::hub::HubConfig::history_len), whose
    /// default it shares). Default 1000: enough for a client that was away a
    /// minute on a busy chat room; a thousand topics at 1 KiB per message
    /// stay near 1 GiB of Redis memory at worst. 0 keeps no history (every
    /// resume that missed something is a gap).
    pub history_len: usize,
    /// How old a kept message may be (as
    /// [`HubConfig::history_age`](crate::hub::HubConfig::history_age)).
    /// Default 5 minutes: a resume is for a client that lost its connection,
    /// and one away longer is better off reloading. A topic's whole stream
    /// expires once it is this idle, so idle topics cost Redis no memory but
    /// their small epoch/offset hash. Zero keeps no history.
    pub history_age: Duration,
    /// How long one Redis command may take before the broker gives up and
    /// answers `Err` ("Redis unavailable"). Default 2 s: a healthy Redis
    /// answers in well under a millisecond, and a publish should fail while a
    /// person still waits for it rather than hang.
    pub command_timeout: Duration,
    /// How long a process's room members stay in Redis without being
    /// refreshed. Default 30 s: the members of a process that crashed
    /// disappear (and their `leave` is announced) within about this long.
    pub presence_ttl: Duration,
    /// How often each process refreshes its members. Default 10 s, a third
    /// of `presence_ttl`, so that two missed refreshes are not yet an expiry.
    /// Must be shorter than `presence_ttl`.
    pub presence_refresh: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            prefix: "sockeye".to_owned(),
            history_len: 1000,
            history_age: Duration::from_secs(5 * 60),
            command_timeout: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(30),
            presence_refresh: Duration::from_secs(10),
        }
    }
}

impl RedisConfig {
    /// Sets [`RedisConfig::prefix`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`RedisConfig::history_len`].
    pub fn history_len(mut self, len: usize) -> Self {
        self.history_len = len;
        self
    }

    /// Sets [`RedisConfig::history_age`].
    pub fn history_age(mut self, age: Duration) -> Self {
        self.history_age = age;
        self
    }

    /// Sets [`RedisConfig::command_timeout`].
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Sets [`RedisConfig::presence_ttl`] and [`RedisConfig::presence_refresh`].
    pub fn presence(mut self, ttl: Duration, refresh: Duration) -> Self {
        self.presence_ttl = ttl;
        self.presence_refresh = refresh;
        self
    }

    /// Messages kept per topic, all things considered (a zero age keeps none).
    pub(super) fn kept(&self) -> usize {
        if self.history_age.is_zero() {
            0
        } else {
            self.history_len
        }
    }

    /// `history_age` in whole milliseconds, at least 1 (Redis counts in ms).
    pub(super) fn age_ms(&self) -> u64 {
        (self.history_age.as_millis() as u64).max(1)
    }

    /// Why this configuration cannot work, if it cannot.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.prefix.is_empty() {
            return Err("the key prefix is empty".into());
        }
        if self.command_timeout.is_zero() {
            return Err("command_timeout is zero".into());
        }
        if self.presence_refresh.is_zero() || self.presence_refresh >= self.presence_ttl {
            return Err(format!(
                "presence_refresh ({:?}) must be non-zero and shorter than presence_ttl ({:?})",
                self.presence_refresh, self.presence_ttl
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(RedisConfig::default().check(), Ok(()));
    }

    #[test]
    fn refresh_must_be_shorter_than_ttl() {
        let config =
            RedisConfig::default().presence(Duration::from_secs(5), Duration::from_secs(5));
        assert!(config.check().unwrap_err().contains("presence_refresh"));
    }

    #[test]
    fn empty_prefix_is_refused() {
        assert!(RedisConfig::default().prefix("").check().is_err());
    }
}
