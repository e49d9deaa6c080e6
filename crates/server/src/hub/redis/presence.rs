//! Room members across the cluster.
//!
//! This process keeps its own members (room -> user -> connections) in
//! memory; Redis holds, per room, which user is present on which process (see
//! `presence.lua`). A user's first connection on this process adds it to
//! Redis, the last one leaving removes it, and a background task refreshes
//! the entries before they expire, so the memory here is the truth for this
//! process and Redis is rebuilt from it after losing it (a restart).
//!
//! Changes to Redis are made one at a time per process (`Local::writes`):
//! otherwise a refresh that read the members just before a leave could put
//! the leaver back, and announce a join nobody made.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use redis::Value;

use super::{lock, Inner};
use crate::hub::broker::BrokerError;
use crate::hub::types::ConnId;

/// This process's members.
#[derive(Debug, Default)]
pub(super) struct Local {
    state: Mutex<State>,
    /// Held while a change of this process's members goes to Redis (not on
    /// the delivery path: joins and leaves only).
    writes: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// room -> user -> the user's connections in the room.
    rooms: HashMap<String, HashMap<String, HashSet<ConnId>>>,
    /// room -> users who left here while Redis was away: the refresh task
    /// removes them from Redis when it can.
    left: HashMap<String, HashSet<String>>,
}

/// `Broker::join`: announced when it is the user's first connection in the
/// room anywhere in the cluster.
pub(super) async fn join(
    inner: &Inner,
    room: &str,
    user: &str,
    conn: ConnId,
) -> Result<usize, BrokerError> {
    let writing = inner.presence.writes.lock().await;
    let first_here = {
        let mut state = lock(&inner.presence.state);
        if let Some(users) = state.left.get_mut(room) {
            users.remove(user);
        }
        let conns = state
            .rooms
            .entry(room.to_owned())
            .or_default()
            .entry(user.to_owned())
            .or_default();
        conns.insert(conn) && conns.len() == 1
    };
    if !first_here {
        // Another connection of this user is here already: nothing changes.
        drop(writing);
        return apply(inner, room, &[], &[]).await.map(|users| users.len());
    }
    match apply(inner, room, &[user], &[]).await {
        Ok(users) => Ok(users.len()),
        Err(e) => {
            // Not joined after all: forget it here too.
            let mut state = lock(&inner.presence.state);
            remove_conn(&mut state, room, user, conn);
            Err(e)
        }
    }
}

/// `Broker::leave`: announced when it was the user's last connection in the
/// room anywhere in the cluster.
pub(super) async fn leave(
    inner: &Inner,
    room: &str,
    user: &str,
    conn: ConnId,
) -> Result<usize, BrokerError> {
    let writing = inner.presence.writes.lock().await;
    let last_here = remove_conn(&mut lock(&inner.presence.state), room, user, conn);
    if !last_here {
        drop(writing);
        return apply(inner, room, &[], &[]).await.map(|users| users.len());
    }
    match apply(inner, room, &[], &[user]).await {
        Ok(users) => Ok(users.len()),
        Err(e) => {
            // Gone here all the same; Redis learns it when it is back.
            let mut state = lock(&inner.presence.state);
            state
                .left
                .entry(room.to_owned())
                .or_default()
                .insert(user.to_owned());
            Err(e)
        }
    }
}

/// Forgets one connection; true when it was the user's last in the room.
fn remove_conn(state: &mut State, room: &str, user: &str, conn: ConnId) -> bool {
    let Some(users) = state.rooms.get_mut(room) else {
        return false;
    };
    let Some(conns) = users.get_mut(user) else {
        return false;
    };
    if !conns.remove(&conn) || !conns.is_empty() {
        return false;
    }
    users.remove(user);
    if users.is_empty() {
        state.rooms.remove(room);
    }
    true
}

/// Runs `presence.lua` on `room`: adds (or refreshes) `adds` and removes
/// `removes` for this process, expires what other processes stopped
/// refreshing, announces the changes; returns the room's users (unsorted).
pub(super) async fn apply(
    inner: &Inner,
    room: &str,
    adds: &[&str],
    removes: &[&str],
) -> Result<Vec<String>, BrokerError> {
    let mut invocation = inner.scripts.presence.prepare_invoke();
    invocation
        .key(inner.keys.presence(room))
        .arg(inner.keys.channel(room))
        .arg(room)
        .arg(&inner.node)
        .arg(inner.config.presence_ttl.as_millis().to_string())
        .arg(adds.len());
    for user in adds.iter().chain(removes) {
        invocation.arg(*user);
    }
    let reply = inner.invoke("presence", &invocation).await?;
    let Value::Array(users) = &reply else {
        return Err(super::bad_reply("presence", &reply));
    };
    users
        .iter()
        .map(|user| super::string(user).ok_or_else(|| super::bad_reply("presence", &reply)))
        .collect()
}

/// The background task: refreshes this process's members every
/// `presence_refresh`, and at once when the pub/sub task reconnected.
pub(super) async fn refresh_loop(inner: Arc<Inner>) {
    let every = inner.config.presence_refresh;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = inner.resync.notified() => {}
        }
        refresh(&inner).await;
    }
}

/// One refresh of every room this process has members in (or owes a leave).
async fn refresh(inner: &Inner) {
    let rooms: Vec<String> = {
        let state = lock(&inner.presence.state);
        let names: HashSet<&String> = state.rooms.keys().chain(state.left.keys()).collect();
        names.into_iter().cloned().collect()
    };
    for room in rooms {
        let _writing = inner.presence.writes.lock().await;
        let (here, left): (Vec<String>, Vec<String>) = {
            let state = lock(&inner.presence.state);
            let here = state
                .rooms
                .get(&room)
                .map(|users| users.keys().cloned().collect())
                .unwrap_or_default();
            let left = state
                .left
                .get(&room)
                .map(|users| users.iter().cloned().collect())
                .unwrap_or_default();
            (here, left)
        };
        if here.is_empty() && left.is_empty() {
            continue; // everyone left since the list was made
        }
        let adds: Vec<&str> = here.iter().map(String::as_str).collect();
        let removes: Vec<&str> = left.iter().map(String::as_str).collect();
        if let Err(e) = apply(inner, &room, &adds, &removes).await {
            tracing::debug!(node = %inner.node, room = %room, "presence refresh failed: {e}");
            return; // Redis is away; the next tick tries again
        }
        if !left.is_empty() {
            let mut state = lock(&inner.presence.state);
            if let Some(users) = state.left.get_mut(&room) {
                for user in &left {
                    users.remove(user);
                }
                if users.is_empty() {
                    state.left.remove(&room);
                }
            }
        }
    }
}
