//! The Lua scripts, run with `EVALSHA` (and `EVAL` again after Redis forgot
//! them, as after a restart). Each is `prelude.lua` followed by its own file.

use redis::Script;

/// The loaded scripts (their SHA-1 digests are computed once).
#[derive(Debug)]
pub(super) struct Scripts {
    /// INCR + XADD + PUBLISH of one message: `publish.lua`.
    pub(super) publish: Script,
    /// Position and history after an offset: `history.lua`.
    pub(super) history: Script,
    /// Position only: `latest.lua`.
    pub(super) latest: Script,
    /// Change, expire and announce a room's members: `presence.lua`.
    pub(super) presence: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            publish: Script::new(concat!(
                include_str!("prelude.lua"),
                include_str!("publish.lua")
            )),
            history: Script::new(concat!(
                include_str!("prelude.lua"),
                include_str!("history.lua")
            )),
            latest: Script::new(concat!(
                include_str!("prelude.lua"),
                include_str!("latest.lua")
            )),
            presence: Script::new(concat!(
                include_str!("prelude.lua"),
                include_str!("presence.lua")
            )),
        }
    }
}
