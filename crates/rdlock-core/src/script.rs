//! The Lua scripts the lock runs on the server, and the names the core knows them by.

/// One of rdlock's server-side scripts. The core builds their arguments and reads their
/// replies; a driver only has to run them (`EVALSHA`, falling back to `EVAL` on `NOSCRIPT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Script {
    /// Take the lock, confirm an earlier take, or join the wait queue.
    Acquire,
    /// Owner-checked release that hands the lock to the next waiter.
    Release,
    /// Owner-checked renewal of one or many locks.
    Extend,
}

impl Script {
    /// Every script, for drivers that load them up front.
    pub const ALL: [Script; 3] = [Script::Acquire, Script::Release, Script::Extend];

    /// The Lua source (the fence prelude, `fence.lua`, is prepended to the scripts that grant
    /// a lock).
    pub fn source(self) -> &'static str {
        match self {
            Script::Acquire => concat!(include_str!("../scripts/fence.lua"), include_str!("../scripts/acquire.lua")),
            Script::Release => concat!(include_str!("../scripts/fence.lua"), include_str!("../scripts/release.lua")),
            Script::Extend => include_str!("../scripts/extend.lua"),
        }
    }

    /// A short name for logs and traces.
    pub fn name(self) -> &'static str {
        match self {
            Script::Acquire => "acquire",
            Script::Release => "release",
            Script::Extend => "extend",
        }
    }
}
