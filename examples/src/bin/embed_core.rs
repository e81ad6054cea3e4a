//! Embedding the sans-IO core in a loop of your own: no adapter and no async runtime, only
//! `rdlock_core::Engine`, two synchronous connections and `rdlock_driver::convert` (the one
//! translation between core commands/replies and the redis crate). This is the skeleton of
//! a driver for a custom executor: feed an input, drain the outputs, wait until the engine's
//! next timer or the next pub/sub message, repeat.
//!
//! Two locks of one engine contend for one key: the first holds it for a moment, the second
//! waits in the queue and gets it handed over by the first one's release.
//!
//! `cargo run -p rdlock-examples --bin embed_core`

use std::time::{Duration, Instant};

use rdlock_core::{
    Acquire, Class, Command, Engine, EngineConfig, Event, LockEvent, LockOptions, Reply, Request, Transmit,
    TransportError,
};
use rdlock_driver::convert::{self, Eval};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = rdlock_testkit::RedisServer::start()?;
    let client = redis::Client::open(server.url())?;
    let open = || -> redis::RedisResult<redis::Connection> {
        let conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?; // plus the WAIT time, for Confirm requests
        Ok(conn)
    };
    // Class::Commands and Class::Confirm need a connection each (WAIT blocks its connection).
    let (mut commands, mut confirm) = (open()?, open()?);
    let mut pubsub_conn = client.get_connection()?;
    let mut pubsub = pubsub_conn.as_pubsub();

    let start = Instant::now();
    // Seeds its owner tokens from the operating system.
    let mut engine = Engine::new(EngineConfig::default())?;
    let options = LockOptions { ttl: Duration::from_secs(5), ..LockOptions::default() };
    // Each call returns the lock and the op its answer will carry.
    let (first, _) = engine.acquire("embedded", options, Acquire::Wait { deadline: None }, start)?;
    let (second, _) =
        engine.acquire("embedded", options, Acquire::Wait { deadline: Some(start + Duration::from_secs(5)) }, start)?;
    let name = |id| if id == first { "first " } else { "second" };
    let mut release_first_at = None;

    loop {
        // 1. Carry out what the engine asks for, feeding each outcome straight back.
        while let Some(transmit) = engine.poll_transmit() {
            match transmit {
                Transmit::Request(req) => {
                    let conn = match req.route.class {
                        Class::Commands => &mut commands,
                        Class::Confirm => &mut confirm,
                    };
                    let reply = send(conn, &req);
                    println!(
                        "{:>7.1} ms  sent {}: {}",
                        ms(start),
                        names(&req),
                        if reply.is_ok() { "ok" } else { "failed" }
                    );
                    engine.handle_reply(req.id, reply, Instant::now())?;
                }
                Transmit::Subscribe(channel) => {
                    pubsub.subscribe(&channel)?;
                    println!("{:>7.1} ms  subscribed to {channel}", ms(start));
                    engine.handle_subscribed(&channel, Instant::now());
                }
                Transmit::Unsubscribe(channel) => pubsub.unsubscribe(&channel)?,
                // Only a cluster engine (`EngineConfig::cluster`) shards its channels.
                Transmit::SubscribeShard { .. } | Transmit::UnsubscribeShard { .. } => {}
            }
        }
        // 2. Act on the outcomes: this is where an application (or an adapter's API) lives.
        let mut acted = false;
        while let Some(LockEvent { lock: id, event, .. }) = engine.poll_event() {
            let now = Instant::now();
            match event {
                Event::Acquired { fence, valid_until } => {
                    println!(
                        "{:>7.1} ms  {} acquired, fence {fence}, valid for {:?}",
                        ms(start),
                        name(id),
                        valid_until - now
                    );
                    if id == first {
                        release_first_at = Some(now + Duration::from_millis(100)); // hold it a moment
                    } else {
                        engine.release(id, now)?;
                        acted = true;
                    }
                }
                Event::Released { outcome } => {
                    println!("{:>7.1} ms  {} released ({outcome:?})", ms(start), name(id));
                    if id == second {
                        return Ok(());
                    }
                }
                other => println!("{:>7.1} ms  {}: {other:?}", ms(start), name(id)),
            }
        }
        let now = Instant::now();
        if release_first_at.is_some_and(|at| at <= now) {
            release_first_at = None;
            engine.release(first, now)?;
            acted = true;
        }
        if acted {
            continue; // an input was fed: drain the outputs before sleeping
        }
        // 3. Wait for a hand-off message, the engine's next timer or our own, whichever is first.
        let wake = [engine.poll_timeout(), release_first_at].into_iter().flatten().min();
        let wait = wake.map_or(Duration::from_secs(1), |at| at.saturating_duration_since(now));
        pubsub.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        match pubsub.get_message() {
            Ok(msg) => engine.handle_message(msg.get_channel_name(), msg.get_payload_bytes(), Instant::now()),
            Err(e) if e.is_timeout() => {}
            // A real driver reconnects, then calls `handle_subscriptions_lost` to subscribe again.
            Err(e) => return Err(e.into()),
        }
        engine.handle_timeout(Instant::now());
    }
}

/// One request as one pipeline, sent again by source if the server lacks a script.
fn send(conn: &mut redis::Connection, req: &Request) -> Result<Vec<Reply>, TransportError> {
    let mut eval = Eval::Sha;
    loop {
        match convert::pipeline(&req.commands, eval).query::<Vec<redis::Value>>(conn) {
            Ok(values) if eval == Eval::Sha && convert::needs_source(&values) => eval = Eval::Source,
            Ok(values) => return Ok(values.into_iter().map(convert::reply).collect()),
            // A real driver also drops a connection that timed out: a late reply must not
            // answer the next request.
            Err(e) => return convert::failure(&e, req.commands.len()),
        }
    }
}

fn names(req: &Request) -> String {
    let names: Vec<&str> = req
        .commands
        .iter()
        .map(|c| match c {
            Command::Script { script, .. } | Command::ScriptWithValue { script, .. } => script.name(),
            Command::Wait { .. } => "WAIT",
            Command::WaitAof { .. } => "WAITAOF",
            Command::Role => "ROLE",
            Command::Ping => "PING",
            Command::SetIfEq { .. } => "SET IFEQ",
        })
        .collect();
    names.join(" + ")
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
