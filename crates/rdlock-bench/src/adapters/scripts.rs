//! The floor of rdlock's protocol on this server: raw's client (the redis crate's multiplexed
//! connection, on tokio) sending rdlock's own acquire and release scripts (`EVALSHA`, the
//! arguments made by rdlock-core's script builders, as the engine makes them), and nothing
//! else: no engine, no driver, no pub/sub, no renewals. Its ratio to raw is what the scripts
//! cost the server beyond raw's `SET NX` and `EVAL`; an adapter's ratio to it is what its
//! client adds.
//!
//! Uncontended scenarios only (S1, S3 and their cluster forms): a held key comes back as an
//! error, since waiting for a hand-off needs the pub/sub this baseline leaves out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdlock_core::{
    AcquireArgs, AcquireReply, Command, FENCE_TTL, HANDOFF_CLAIM, LockKeys, Mode, ReleaseArgs, ReleaseReply,
};
use rdlock_driver::convert::{self, Eval};

use super::route::Route;
use super::{Locker, Resource, Spec};
use crate::BoxError;

/// How long a queue outlives its last push: the engine's floor (60 s), as it sends it.
const QUEUE_TTL: Duration = Duration::from_secs(60);

/// One client: one multiplexed connection (one per primary on a cluster). `UNTIMED`: its
/// single server's connection has no response timeout (no runtime timer per request), for
/// `scripts-smol`, the floor of async-io's path (`adapters/mod.rs`).
#[derive(Debug)]
pub struct Scripts<const UNTIMED: bool = false> {
    route: Route,
    ids: Ids,
}

/// What names a client's locks: the client id an engine would draw (it names the inbox) and
/// the tokens' seed and counter.
#[derive(Debug)]
pub struct Ids {
    client: u64,
    seed: u64,
    next: AtomicU64,
}

impl Ids {
    pub(crate) fn new() -> Result<Self, BoxError> {
        Ok(Self { client: getrandom::u64()?, seed: getrandom::u64()?, next: AtomicU64::new(0) })
    }

    /// The acquire script's call for `key`, as the engine makes it, and the guard it grants.
    pub(crate) fn acquire(&self, key: &str, spec: Spec) -> Result<(redis::Cmd, ScriptsGuard), BoxError> {
        let (command, guard) = self.acquire_command(key, spec)?;
        Ok((convert::command(&command, Eval::Sha), guard))
    }

    /// [`Ids::acquire`]'s call as the core's command.
    fn acquire_command(&self, key: &str, spec: Spec) -> Result<(Command, ScriptsGuard), BoxError> {
        // A token of 32 hex digits, as the engine stores it.
        let token = format!("{:016x}{:016x}", self.seed, self.next.fetch_add(1, Ordering::Relaxed));
        let inbox = LockKeys::inbox_suffix(key, self.client);
        let guard = ScriptsGuard { key: key.to_owned(), token, inbox, ttl_ms: u64::try_from(spec.ttl.as_millis())? };
        Ok((attempt(&guard, Mode::First)?, guard))
    }
}

/// An attempt of `mode` for `guard`'s lock, as the engine makes it.
fn attempt(guard: &ScriptsGuard, mode: Mode) -> Result<Command, BoxError> {
    let args = AcquireArgs {
        token: &guard.token,
        ttl_ms: guard.ttl_ms,
        mode,
        queue_ttl: QUEUE_TTL,
        fence_ttl: FENCE_TTL,
        claim: HANDOFF_CLAIM,
        inbox: &guard.inbox,
    };
    Ok(args.command(&LockKeys::new(&guard.key)?))
}

/// A later attempt of `guard`'s wait (it confirms a hand-off made to it), as the engine makes it.
pub(crate) fn retry(guard: &ScriptsGuard) -> Result<redis::Cmd, BoxError> {
    Ok(convert::command(&attempt(guard, Mode::Retry)?, Eval::Sha))
}

/// The release script's call for `guard`, as the engine makes it.
pub(crate) fn release(guard: &ScriptsGuard) -> Result<redis::Cmd, BoxError> {
    Ok(convert::command(&release_command(guard)?, Eval::Sha))
}

/// [`release`]'s call as the core's command.
fn release_command(guard: &ScriptsGuard) -> Result<Command, BoxError> {
    let entry = format!("{}:{}:{}", guard.token, guard.ttl_ms, guard.inbox);
    let args =
        ReleaseArgs { token: &guard.token, entry: &entry, fence_ttl: FENCE_TTL, claim: HANDOFF_CLAIM, fold: None };
    Ok(args.command(&LockKeys::new(&guard.key)?))
}

/// `guard`, if the acquire's reply `value` granted it.
pub(crate) fn granted(value: redis::Value, guard: ScriptsGuard) -> Result<ScriptsGuard, BoxError> {
    match AcquireReply::parse(&convert::reply(value)) {
        Some(AcquireReply::Granted { .. }) => Ok(guard),
        other => Err(format!("the scripts baseline runs uncontended only; the acquire answered {other:?}").into()),
    }
}

/// Whether an attempt's reply `value` granted the lock (`false`: held by another, queued).
pub(crate) fn holds(value: redis::Value) -> Result<bool, BoxError> {
    match AcquireReply::parse(&convert::reply(value)) {
        Some(AcquireReply::Granted { .. }) => Ok(true),
        Some(AcquireReply::Held { .. }) => Ok(false),
        None => Err("the acquire script answered something else".into()),
    }
}

/// Whether the release's reply `value` says the lock was still held.
pub(crate) fn released(value: redis::Value) -> Result<bool, BoxError> {
    Ok(ReleaseReply::parse(rdlock_core::Script::Release, Some(&convert::reply(value)))?.was_held())
}

/// A lock taken by [`Scripts`]: what its release names.
#[derive(Debug)]
pub struct ScriptsGuard {
    key: String,
    token: String,
    inbox: String,
    ttl_ms: u64,
}

impl ScriptsGuard {
    /// The channel its hand-off is announced on.
    pub(crate) fn inbox(&self) -> String {
        LockKeys::inbox_of(&self.key, &self.inbox)
    }

    /// Whether a message on its inbox hands it the lock: `token:fence`.
    pub(crate) fn is_handed(&self, payload: &[u8]) -> bool {
        payload.strip_prefix(self.token.as_bytes()).is_some_and(|rest| rest.first() == Some(&b':'))
    }
}

impl<const UNTIMED: bool> Locker for Scripts<UNTIMED> {
    type Guard = ScriptsGuard;
    const REQUESTS: &'static [&'static str] = &["evalsha", "eval"];
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        let route = if UNTIMED && url.starts_with("redis://") {
            let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
            Route::One(redis::Client::open(url)?.get_multiplexed_async_connection_with_config(&config).await?)
        } else {
            Route::connect(url).await?
        };
        // Every script cached on the server (on each primary), as the driver does at connect.
        for c in route.nodes() {
            convert::load_scripts().query_async::<()>(&mut c.clone()).await?;
        }
        Ok(Self { route, ids: Ids::new()? })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<ScriptsGuard, BoxError> {
        let (cmd, guard) = self.ids.acquire(key, spec)?;
        let value = self.route.conn(key)?.send_packed_command(&cmd).await?;
        granted(value, guard)
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<ScriptsGuard, BoxError> {
        match resource {
            Resource::Lock => self.lock(key, spec).await,
            _ => Err("the scripts baseline takes plain locks only".into()),
        }
    }

    async fn release(&self, guard: ScriptsGuard) -> Result<bool, BoxError> {
        let value = self.route.conn(&guard.key)?.send_packed_command(&release(&guard)?).await?;
        released(value)
    }

    fn is_valid(&self, _guard: &ScriptsGuard) -> bool {
        true
    }
}

/// The protocol's own floor, end to end: raw's client (as [`Scripts`]) sending, with rdlock's
/// keys and arguments, the cheapest two scripts that run rdlock's six commands of an
/// uncontended cycle and nothing else (`crate::scripts::FLOOR`: no argument checks, no
/// helpers, no queue logic). What fencing and a FIFO queue cost through scripts, whoever
/// writes them; uncontended scenarios only, named with `--adapters`. `CHECKED`
/// (`commands-checked`): the same commands behind rdlock's own argument checks, the
/// scripts' uncontended paths alone (`crate::scripts::CHECKED`): what checking every call's
/// arguments on the server costs beyond the commands.
#[derive(Debug)]
pub struct Commands<const CHECKED: bool = false> {
    route: Route,
    ids: Ids,
    /// The two scripts' SHA1 digests, made once (the client's cost would grow with the text).
    shas: [String; 2],
}

impl<const CHECKED: bool> Commands<CHECKED> {
    const SOURCES: [&'static str; 2] = if CHECKED { crate::scripts::CHECKED } else { crate::scripts::FLOOR };

    /// `command` (rdlock's call) sent to the floor's script `which` instead.
    fn floor(&self, command: &Command, which: usize) -> Result<redis::Cmd, BoxError> {
        let Command::Script { keys, args, .. } = command else { return Err("not a script".into()) };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.shas[which]).arg(keys.len());
        for k in keys.iter() {
            cmd.arg(k);
        }
        for a in args.iter() {
            cmd.arg(a);
        }
        Ok(cmd)
    }
}

impl<const CHECKED: bool> Locker for Commands<CHECKED> {
    type Guard = ScriptsGuard;
    const REQUESTS: &'static [&'static str] = &["evalsha", "eval"];
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        let route = Route::connect(url).await?;
        for c in route.nodes() {
            for source in Self::SOURCES {
                redis::cmd("SCRIPT").arg("LOAD").arg(source).query_async::<()>(&mut c.clone()).await?;
            }
        }
        let shas = Self::SOURCES.map(|source| redis::Script::new(source).get_hash().to_owned());
        Ok(Self { route, ids: Ids::new()?, shas })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<ScriptsGuard, BoxError> {
        let (command, guard) = self.ids.acquire_command(key, spec)?;
        let value = self.route.conn(key)?.send_packed_command(&self.floor(&command, 0)?).await?;
        match value {
            redis::Value::Array(a) if a.first() == Some(&redis::Value::Int(1)) => Ok(guard),
            other => Err(format!("the floor runs uncontended only; its acquire answered {other:?}").into()),
        }
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<ScriptsGuard, BoxError> {
        match resource {
            Resource::Lock => self.lock(key, spec).await,
            _ => Err("the floor takes plain locks only".into()),
        }
    }

    async fn release(&self, guard: ScriptsGuard) -> Result<bool, BoxError> {
        let cmd = self.floor(&release_command(&guard)?, 1)?;
        let value = self.route.conn(&guard.key)?.send_packed_command(&cmd).await?;
        Ok(value == redis::Value::Int(1))
    }

    fn is_valid(&self, _guard: &ScriptsGuard) -> bool {
        true
    }
}
