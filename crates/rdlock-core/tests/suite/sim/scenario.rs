//! One scenario, drawn from a seed: the cast (clients, keys, replicas), the network's
//! manners and the faults, each switched on or off by the seed so that clean and hostile
//! runs both occur.

use super::MS;
use super::dice::Dice;
use super::fake::Bug;

/// Something that goes wrong at a scripted instant.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The client stops processing (no input reaches its engine) for this long.
    Pause { client: usize, ns: u64 },
    /// The client vanishes for good; its keys expire.
    Crash { client: usize },
    /// The client's pub/sub connection drops (and reconnects at once).
    DropPubSub { client: usize },
    /// The server restarts without persistence, answering `LOADING` for this long.
    Restart { loading: u64 },
    /// Up to `count` clients that are waiting for a lock at this instant vanish for good
    /// (killed, or dropped without clean-up: their connections are cut), leaving their queue
    /// entries behind. With none waiting, it tries again a little later.
    VanishWaiters { count: usize },
}

/// Lock names of different shapes: plain, with a hash tag, with an unmatched brace.
const KEY_POOL: [&str; 5] = ["orders", "{user:42}:lock", "a{b", "job:7", "{tag}"];
/// Keys that look alike, adjacent so that a window of them holds pairs: under layout 1, `k` and
/// `{k}` (and `a{b` and `{a{b}`) shared their queue, fence counter and channel.
const LOOKALIKE_POOL: [&str; 9] = ["k", "{k}", "{k}x", "k}", "a{b", "{a{b}", "a}b", "a{}b", "x{k}"];
/// Share of scenarios that use look-alike keys (drawn from dice of their own, so the other
/// scenarios stay as they were).
const LOOKALIKE_SHARE: f64 = 0.3;
/// Share of scenarios in which waiters vanish while queued (dice of their own too).
const VANISH_SHARE: f64 = 0.2;

/// Share of scenarios whose locks all share their keys with foreign clients (no queue; drawn
/// from dice of their own, so the other scenarios stay as they were).
const SHARED_SHARE: f64 = 0.25;

/// A key that holds a list, so that locking it must fail with `WRONGTYPE`.
pub const WRONGTYPE_KEY: &str = "not-a-lock";

/// A replica's lag range and the windows in which it applies nothing.
#[derive(Clone, Debug)]
pub struct ReplicaSpec {
    pub lag: (u64, u64),
    pub stalls: Vec<(u64, u64)>,
}

/// What a key of a scenario is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Lock,
    /// A semaphore with this many permits.
    Semaphore(u32),
    /// A read-write lock: each acquisition reads or writes.
    RwLock,
    /// A mutex: a lock with a value, which outlives the lock or lives this long after each
    /// write (long enough to outlive every hold: the checker's model of the value does not
    /// let it expire under a holder).
    Mutex {
        value_ttl_ms: Option<u64>,
    },
}

/// Share of scenarios whose keys are semaphores and read-write locks as well as locks
/// (drawn from dice of their own, so the lock-only scenarios stay as they were).
const COUNTED_SHARE: f64 = 0.35;
/// Share of scenarios in which some locks are mutexes (dice of their own too).
const MUTEX_SHARE: f64 = 0.3;

#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub bug: Bug,
    pub clients: usize,
    pub workers: usize,
    pub keys: Vec<String>,
    pub wrongtype: bool,
    pub replicas: Vec<ReplicaSpec>,
    /// One-way network delay range, and the chance and size of a spike.
    pub delay: (u64, u64),
    pub spike: (f64, u64),
    pub req_loss: f64,
    pub reply_loss: f64,
    pub msg_loss: f64,
    /// The driver reports `Timeout` this long after sending when no reply came.
    pub response_timeout: u64,
    /// Clients start new work until then; afterwards faults stop and the world quiesces.
    pub active: u64,
    pub faults: Vec<(u64, Fault)>,
    /// `TIME` at virtual 0, in microseconds.
    pub epoch_us: u64,
    /// Lock TTLs are drawn from this range (ms).
    pub ttl_ms: (u64, u64),
    /// Every lock shares its key with foreign clients (`Sharing::Foreign`), with a courtesy
    /// delay drawn from this range (ms); `None`: every lock queues.
    pub shared: Option<(u64, u64)>,
    /// Waits with a deadline give up after a time drawn from this range (ms).
    pub patience_ms: (u64, u64),
    /// What each key is; a key not listed is a lock.
    pub kinds: std::collections::BTreeMap<String, Kind>,
    /// How often a client's driver may `PING` its pub/sub connection while locks wait; `None`:
    /// never (every long wait's hand-off is then confirmed).
    pub ping_every: Option<u64>,
}

impl Scenario {
    pub fn new(seed: u64, bug: Bug) -> Self {
        let mut d = Dice::new(seed ^ 0x5ce7_a410);
        let clients = d.range(2, 4) as usize;
        let nkeys = d.range(1, 3) as usize;
        let first = d.below(KEY_POOL.len());
        let keys = (0..nkeys).map(|i| KEY_POOL[(first + i) % KEY_POOL.len()].to_owned()).collect();
        let active = d.range(300, 900) * MS;
        let replicas = (0..d.range(0, 2) * u64::from(d.chance(0.6)))
            .map(|_| {
                let lo = d.range(0, 3) * MS / 2;
                let lag = (lo, lo + d.range(0, 15) * MS);
                let stalls = if d.chance(0.3) {
                    let from = d.range(0, active / MS) * MS;
                    vec![(from, from + d.range(20, 300) * MS)]
                } else {
                    Vec::new()
                };
                ReplicaSpec { lag, stalls }
            })
            .collect();
        let lo = d.range(100, 2000) * 1000;
        let delay = (lo, lo + d.range(0, 4000) * 1000);
        let spike = if d.chance(0.3) { (0.02, d.range(5, 40) * MS) } else { (0.0, 0) };
        let lossy = d.chance(0.4);
        let loss = |d: &mut Dice| if lossy && d.chance(0.7) { d.range(5, 60) as f64 / 1000.0 } else { 0.0 };
        let (req_loss, reply_loss) = (loss(&mut d), loss(&mut d));
        let msg_loss = if d.chance(0.3) { d.range(50, 500) as f64 / 1000.0 } else { 0.0 };
        let ttl_ms = if d.chance(0.5) { (50, 200) } else { (50, 500) };
        let mut faults = Vec::new();
        let at = |d: &mut Dice| d.range(10, active / MS) * MS;
        if d.chance(0.3) {
            for _ in 0..d.range(1, 2) {
                let f = Fault::Pause { client: d.below(clients), ns: d.range(10, 700) * MS };
                faults.push((at(&mut d), f));
            }
        }
        if d.chance(0.2) {
            faults.push((at(&mut d), Fault::Crash { client: d.below(clients) }));
        }
        if d.chance(0.25) {
            for _ in 0..d.range(1, 3) {
                faults.push((at(&mut d), Fault::DropPubSub { client: d.below(clients) }));
            }
        }
        if d.chance(0.1) {
            faults.push((at(&mut d), Fault::Restart { loading: d.range(0, 30) * MS }));
        }
        faults.sort_by_key(|f| f.0);
        let sc = Self {
            seed,
            bug,
            clients,
            workers: d.range(1, 2) as usize,
            keys,
            wrongtype: d.chance(0.1),
            replicas,
            delay,
            spike,
            req_loss,
            reply_loss,
            msg_loss,
            response_timeout: d.range(60, 150) * MS,
            active,
            faults,
            epoch_us: 1_700_000_000_000_000 + d.range(0, 1 << 40),
            ttl_ms,
            shared: None,
            patience_ms: (10, 800),
            kinds: Default::default(),
            // Its own dice, so that the scenarios drawn before pings stay as they were.
            ping_every: {
                let mut pd = Dice::new(seed ^ 0x9196_0000);
                pd.chance(0.75).then(|| pd.range(1, 120) * MS)
            },
        };
        let mut sd = Dice::new(seed ^ 0x5ba2_ed00);
        let sc = if sd.chance(SHARED_SHARE) { Self { shared: Some((1, sd.range(5, 150))), ..sc } } else { sc };
        let sc = if Dice::new(seed ^ 0x100c_a11e).chance(LOOKALIKE_SHARE) { sc.with_lookalike_keys() } else { sc };
        let mut kd = Dice::new(seed ^ 0xc0_a7ed);
        let sc = if sc.shared.is_none() && kd.chance(COUNTED_SHARE) { sc.with_counted_resources(&mut kd) } else { sc };
        let mut md = Dice::new(seed ^ 0x003e_7ec5);
        let sc = if sc.shared.is_none() && md.chance(MUTEX_SHARE) { sc.with_mutexes(&mut md) } else { sc };
        let mut d = Dice::new(seed ^ 0x6405_7a17);
        if d.chance(VANISH_SHARE) {
            let mut sc = sc;
            let at = d.range(10, sc.active / MS) * MS;
            sc.faults.push((at, Fault::VanishWaiters { count: d.range(1, 2) as usize }));
            sc.faults.sort_by_key(|f| f.0);
            sc
        } else {
            sc
        }
    }

    /// The same scenario with each key a lock, a semaphore (1 to 3 permits) or a read-write
    /// lock, and more workers to contend for them.
    pub fn with_counted_resources(mut self, d: &mut Dice) -> Self {
        self.workers = d.range(1, 3) as usize;
        for key in &self.keys {
            let kind = match d.below(10) {
                0..=2 => Kind::Lock,
                3..=6 => Kind::Semaphore(d.range(1, 3) as u32),
                _ => Kind::RwLock,
            };
            self.kinds.insert(key.clone(), kind);
        }
        self
    }

    /// The same scenario with some of its locks mutexes (at least one, when it has a lock).
    pub fn with_mutexes(mut self, d: &mut Dice) -> Self {
        let locks: Vec<String> = self.keys.iter().filter(|k| self.kind(k) == Kind::Lock).cloned().collect();
        for (i, key) in locks.iter().enumerate() {
            if i == 0 || d.chance(0.6) {
                let value_ttl_ms = d.chance(0.3).then(|| d.range(10_000, 60_000));
                self.kinds.insert(key.clone(), Kind::Mutex { value_ttl_ms });
            }
        }
        self
    }

    /// What `key` is.
    pub fn kind(&self, key: &str) -> Kind {
        self.kinds.get(key).copied().unwrap_or(Kind::Lock)
    }

    /// The same scenario recast for ghost waiters: 5 to 7 clients of one worker each on one
    /// key, long leases (1-3 s, far above a hand-off's claim) and patient waits, and 2 to 4
    /// waiters that vanish while queued, once or twice.
    pub fn with_vanishing_waiters(mut self) -> Self {
        let mut d = Dice::new(self.seed ^ 0x6405_7a18);
        self.clients = d.range(5, 7) as usize;
        self.workers = 1;
        self.keys.truncate(1);
        self.ttl_ms = (1000, 3000);
        self.patience_ms = (3000, 10_000);
        for _ in 0..d.range(1, 2) {
            let at = d.range(50, self.active / MS) * MS;
            self.faults.push((at, Fault::VanishWaiters { count: d.range(2, 4) as usize }));
        }
        self.faults.sort_by_key(|f| f.0);
        self
    }

    /// The same scenario on 2 to 4 adjacent keys of [`LOOKALIKE_POOL`], used concurrently.
    pub fn with_lookalike_keys(mut self) -> Self {
        let mut d = Dice::new(self.seed ^ 0x100c_a11f);
        let first = d.below(LOOKALIKE_POOL.len());
        let n = d.range(2, 4) as usize;
        self.keys = (0..n).map(|i| LOOKALIKE_POOL[(first + i) % LOOKALIKE_POOL.len()].to_owned()).collect();
        self
    }

    /// The longest one-way trip a message can take.
    pub fn max_delay(&self) -> u64 {
        self.delay.1.max(self.spike.1)
    }
}
