//! Who holds which subdomain: claims, takeovers, releases, and the memory
//! of recently released names (for reclaiming, and for a clear 502).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::throttle::Bucket;
use crate::mux::Opener;
use crate::protocol::{check_subdomain, TunnelRequest};

/// Released names remembered at most this many (oldest forgotten first).
const MAX_RELEASED: usize = 10_000;

/// A live tunnel: where its streams go and what guards it.
#[derive(Debug, Clone)]
pub(crate) struct Tunnel {
    pub(crate) agent: u64,
    pub(crate) opener: Opener,
    /// `Basic base64(user:pass)`, when the tunnel asks for basic auth.
    pub(crate) auth: Option<String>,
    /// The agent's stream slots (shared by its tunnels).
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) bucket: Option<Arc<Bucket>>,
}

#[derive(Debug)]
struct Held {
    tunnel: Tunnel,
    session: String,
    token: Option<String>,
}

#[derive(Debug)]
struct Released {
    at: Instant,
    token: Option<String>,
}

#[derive(Debug)]
struct Agent {
    names: Vec<String>,
    kick: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    next_agent: u64,
    agents: HashMap<u64, Agent>,
    held: HashMap<String, Held>,
    released: HashMap<String, Released>,
}

/// What the public side learns about a host's subdomain.
#[derive(Debug)]
pub(crate) enum Lookup {
    Live(Tunnel),
    /// It was served until this long ago.
    Gone(Duration),
    Unknown,
}

/// Why a claim was refused.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) reason: String,
    pub(crate) retry: bool,
}

/// A claim that succeeded: the agent's number, its names, and the token
/// that ends it when another link of the same session takes over.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) agent: u64,
    pub(crate) names: Vec<String>,
    pub(crate) kick: CancellationToken,
}

/// Everything the server knows about agents and names.
#[derive(Debug)]
pub(crate) struct Registry {
    state: Mutex<State>,
    max_agents: usize,
    reclaim_grace: Duration,
}

/// What a claim needs besides the names.
#[derive(Debug)]
pub(crate) struct ClaimRequest<'a> {
    pub(crate) session: &'a str,
    pub(crate) token: Option<&'a str>,
    pub(crate) tunnels: &'a [TunnelRequest],
    pub(crate) opener: Opener,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) bytes_per_second: Option<u64>,
}

impl Registry {
    pub(crate) fn new(max_agents: usize, reclaim_grace: Duration) -> Registry {
        Registry {
            state: Mutex::new(State::default()),
            max_agents,
            reclaim_grace,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn lookup(&self, name: &str) -> Lookup {
        let state = self.lock();
        if let Some(held) = state.held.get(name) {
            if !held.tunnel.opener.is_closed() {
                return Lookup::Live(held.tunnel.clone());
            }
        }
        match state.released.get(name) {
            Some(released) => Lookup::Gone(released.at.elapsed()),
            None => Lookup::Unknown,
        }
    }

    /// The number of agents connected.
    pub(crate) fn agents(&self) -> usize {
        self.lock().agents.len()
    }

    /// Claims every name asked for, or none. A name held by a link of the
    /// same session and token is taken over (that link is ended); one held
    /// by anyone else is refused; one released in the last
    /// `reclaim_grace` is kept for the token that held it.
    pub(crate) fn claim(&self, request: ClaimRequest<'_>) -> Result<Claimed, Refusal> {
        let refuse = |reason: String| Refusal {
            reason,
            retry: false,
        };
        let mut state = self.lock();
        let token = request.token.map(str::to_owned);
        let mut names = Vec::with_capacity(request.tunnels.len());
        let mut taken_over = Vec::new();
        for wanted in request.tunnels {
            let name = match &wanted.name {
                Some(name) => {
                    let name = name.to_ascii_lowercase();
                    check_subdomain(&name).map_err(|e| refuse(e.to_string()))?;
                    name
                }
                None => random_name(&state),
            };
            if names.contains(&name) {
                return Err(refuse(format!("subdomain {name:?} is asked for twice")));
            }
            if let Some(held) = state.held.get(&name) {
                let same = held.session == request.session && held.token == token;
                if !same && !held.tunnel.opener.is_closed() {
                    return Err(refuse(format!(
                        "subdomain {name:?} is in use by another agent; choose another \
                         --subdomain, or stop the agent that holds it"
                    )));
                }
                taken_over.push(held.tunnel.agent);
            } else if let Some(released) = state.released.get(&name) {
                let left = self.reclaim_grace.saturating_sub(released.at.elapsed());
                if released.token != token && !left.is_zero() {
                    return Err(Refusal {
                        reason: format!(
                            "subdomain {name:?} was released by another agent {}s ago and is \
                             kept for it for {}s more",
                            released.at.elapsed().as_secs(),
                            left.as_secs().max(1)
                        ),
                        retry: true,
                    });
                }
            }
            names.push(name);
        }
        let others = state
            .agents
            .keys()
            .filter(|id| !taken_over.contains(id))
            .count();
        if others >= self.max_agents {
            return Err(Refusal {
                reason: format!(
                    "the server is at its limit of {} agents; try again later",
                    self.max_agents
                ),
                retry: true,
            });
        }
        for old in taken_over {
            if let Some(agent) = state.agents.remove(&old) {
                agent.kick.cancel();
                for name in agent.names {
                    state.held.remove(&name);
                }
            }
        }
        state.next_agent += 1;
        let id = state.next_agent;
        let bucket = request
            .bytes_per_second
            .map(|rate| Arc::new(Bucket::new(rate)));
        for (name, wanted) in names.iter().zip(request.tunnels) {
            state.released.remove(name);
            let auth = wanted.auth.as_ref().map(|credentials| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(credentials)
                )
            });
            state.held.insert(
                name.clone(),
                Held {
                    tunnel: Tunnel {
                        agent: id,
                        opener: request.opener.clone(),
                        auth,
                        slots: Arc::clone(&request.slots),
                        bucket: bucket.clone(),
                    },
                    session: request.session.to_owned(),
                    token: token.clone(),
                },
            );
        }
        let kick = CancellationToken::new();
        state.agents.insert(
            id,
            Agent {
                names: names.clone(),
                kick: kick.clone(),
            },
        );
        Ok(Claimed {
            agent: id,
            names,
            kick,
        })
    }

    /// The agent's link ended: its names are released (unless another link
    /// of its session took them over already).
    pub(crate) fn release(&self, agent: u64) {
        let mut state = self.lock();
        let Some(gone) = state.agents.remove(&agent) else {
            return;
        };
        let now = Instant::now();
        for name in gone.names {
            let Some(held) = state.held.remove(&name) else {
                continue;
            };
            state.released.insert(
                name,
                Released {
                    at: now,
                    token: held.token,
                },
            );
        }
        if state.released.len() > MAX_RELEASED {
            let mut by_age: Vec<(Instant, String)> = state
                .released
                .iter()
                .map(|(name, r)| (r.at, name.clone()))
                .collect();
            by_age.sort();
            let excess = state.released.len() - MAX_RELEASED;
            for (_, name) in by_age.into_iter().take(excess) {
                state.released.remove(&name);
            }
        }
    }
}

fn random_name(state: &State) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    loop {
        let name: String = (0..8)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        if !state.held.contains_key(&name) && !state.released.contains_key(&name) {
            return name;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str) -> Vec<TunnelRequest> {
        vec![TunnelRequest {
            name: Some(name.to_owned()),
            auth: None,
        }]
    }

    fn claim(
        registry: &Registry,
        session: &str,
        token: &str,
        tunnels: &[TunnelRequest],
    ) -> (Result<Claimed, Refusal>, crate::mux::Requests) {
        let (opener, requests) = crate::mux::channel();
        let claimed = registry.claim(ClaimRequest {
            session,
            token: Some(token),
            tunnels,
            opener,
            slots: Arc::new(Semaphore::new(8)),
            bytes_per_second: None,
        });
        (claimed, requests)
    }

    #[tokio::test]
    async fn a_held_name_is_refused_to_others_and_taken_over_by_its_session() {
        let registry = Registry::new(10, Duration::from_secs(60));
        let (first, _link1) = claim(&registry, "session-a", "t", &request("ws-app"));
        let first = first.unwrap();
        let (other, _link2) = claim(&registry, "session-b", "t", &request("ws-app"));
        let other = other.unwrap_err();
        assert!(
            other.reason.contains("in use by another agent"),
            "{}",
            other.reason
        );
        assert!(!other.retry);

        // The same agent reconnecting before the old link was noticed dead.
        let (again, _link3) = claim(&registry, "session-a", "t", &request("ws-app"));
        let again = again.unwrap();
        assert!(first.kick.is_cancelled(), "the old link is ended");
        assert_eq!(again.names, ["ws-app"]);
        // Ending the old link afterwards does not release the new one's name.
        registry.release(first.agent);
        assert!(matches!(registry.lookup("ws-app"), Lookup::Live(_)));
        assert_eq!(registry.agents(), 1);
    }

    #[tokio::test]
    async fn a_released_name_is_kept_for_its_token_for_the_grace_period() {
        let registry = Registry::new(10, Duration::from_secs(60));
        let (first, _link) = claim(&registry, "session-a", "t1", &request("ws-app"));
        registry.release(first.unwrap().agent);
        assert!(matches!(registry.lookup("ws-app"), Lookup::Gone(_)));
        assert!(matches!(registry.lookup("never"), Lookup::Unknown));

        let (other, _link) = claim(&registry, "session-b", "t2", &request("ws-app"));
        let other = other.unwrap_err();
        assert!(other.reason.contains("kept for it"), "{}", other.reason);
        assert!(other.retry);
        // A restarted agent (new session, same token) gets it back.
        let (back, _link) = claim(&registry, "session-c", "t1", &request("ws-app"));
        assert_eq!(back.unwrap().names, ["ws-app"]);
    }

    #[tokio::test]
    async fn limits_and_bad_names() {
        let registry = Registry::new(1, Duration::from_secs(60));
        let (bad, _link) = claim(&registry, "s", "t", &request("Bad_Name"));
        assert!(bad.unwrap_err().reason.contains("invalid subdomain"));
        let twice = [request("a"), request("a")].concat();
        let (twice, _link) = claim(&registry, "s", "t", &twice);
        assert!(twice.unwrap_err().reason.contains("asked for twice"));
        let (one, _link1) = claim(&registry, "s1", "t", &request("one"));
        one.unwrap();
        let (full, _link2) = claim(&registry, "s2", "t", &request("two"));
        let full = full.unwrap_err();
        assert!(
            full.retry && full.reason.contains("limit of 1 agents"),
            "{}",
            full.reason
        );
    }
}
