//! `rdlock`: run a command under a distributed lock on Redis, and inspect, watch or
//! force-release locks. Built on the blocking adapter. Exit codes are listed in `EXIT_CODES`
//! (and in docs/cli.md).

#![warn(missing_docs)]

mod duration;
mod exec;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rdlock_blocking::{Client, ClientConfig, ClientIdentity, Confirm, Error, LockError, TlsConfig, redis};

/// A usage error: unknown flag, missing argument, bad key or duration.
pub const EX_USAGE: u8 = 64;
/// The key is not an rdlock lock (it holds another type of value).
pub const EX_DATAERR: u8 = 65;
/// The server, the sentinels, or the replicas `--confirm` asks for could not be reached.
pub const EX_UNAVAILABLE: u8 = 69;
/// Anything else went wrong (the server refused a script, an unexpected reply).
pub const EX_SOFTWARE: u8 = 70;
/// The lock is busy (`--try`), or `--timeout` passed while waiting.
pub const EX_BUSY: u8 = 75;
/// The lease was lost while the command ran (the command was stopped).
pub const EX_LOST: u8 = 76;
/// The server refused the credentials.
pub const EX_NOPERM: u8 = 77;

const EXAMPLES: &str = "\
Examples:
  # A cron job that must not run twice at once, whichever machine starts it (exit 75 if busy):
  rdlock exec --try --ttl 30s nightly-report -- /usr/local/bin/report --full
  # Wait up to two minutes for the lock; the command finds the fence in $RDLOCK_FENCE:
  RDLOCK_URL=redis://:secret@redis.internal:6379/ rdlock exec --timeout 2m deploy -- ./deploy.sh
  # Through sentinels, waiting for a majority of replicas to hold the lock:
  rdlock --url redis+sentinel://s1:26379,s2:26379/mymaster exec --confirm majority deploy -- ./deploy.sh
  # Over TLS with a private CA (a build with the tls feature), here to a cluster:
  rdlock --url rediss+cluster://n1:7000,n2:7000 --ca-file /etc/redis/ca.pem inspect deploy
  rdlock inspect deploy --json
  rdlock watch deploy --interval 500ms
  rdlock release --force deploy
  rdlock completions bash > /etc/bash_completion.d/rdlock

Exit codes: the command's own status (128+N when it died of signal N); 64 usage error;
65 the key is not an rdlock lock; 69 server (or confirming replicas) unreachable; 70 internal error; 75 busy (--try)
or timed out (--timeout); 76 the lock was lost while the command ran; 77 credentials
refused; 126/127 the command could not be run / was not found; `release --force` exits 1
when nothing was held.";

/// Distributed locks on Redis, from the shell.
#[derive(Debug, Parser)]
#[command(name = "rdlock", version, after_help = EXAMPLES)]
struct Cli {
    /// The server: redis://[user:password@]host:port/db, rediss://...,
    /// redis+sentinel://[user:password@]host:port,host:port/master, or
    /// redis+cluster://[user:password@]host:port,host:port.
    #[arg(long, env = "RDLOCK_URL", default_value = "redis://127.0.0.1:6379/", hide_env_values = true, global = true)]
    url: String,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Acquire KEY (waiting in turn), run COMMAND while the lease is renewed, then release.
    ///
    /// COMMAND gets RDLOCK_FENCE (the lock's fencing token) and RDLOCK_KEY in its environment.
    /// If the lease is lost, COMMAND gets SIGTERM, then SIGKILL after --grace, and rdlock
    /// exits 76. INT and TERM sent to rdlock are forwarded to COMMAND; the lock is released
    /// once it exits.
    Exec(ExecArgs),
    /// Show what the server knows of KEY: holder, lease left, fence, waiters in order.
    Inspect {
        /// The lock's key.
        key: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete KEY whoever holds it and hand it to the first waiter. Breaks the holder's
    /// exclusion: for a holder known to be stuck (it learns at its next renewal).
    Release {
        /// Required: says you mean to break someone else's lock.
        #[arg(long, required = true)]
        force: bool,
        /// The lock's key.
        key: String,
    },
    /// Show KEY's holder, fence and queue, refreshed until Ctrl-C.
    Watch {
        /// The lock's key.
        key: String,
        /// Time between refreshes.
        #[arg(long, default_value = "1s", value_parser = duration::parse)]
        interval: Duration,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell), e.g.
    /// `rdlock completions bash > /etc/bash_completion.d/rdlock`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Certificates for a rediss:// URL (also rediss+sentinel:// and rediss+cluster://: the
/// sentinels and every node then take them). Need a build with the `tls` feature.
#[derive(Debug, Args)]
struct TlsArgs {
    /// The CA (PEM) that signs the servers' certificates, instead of the system's roots.
    #[arg(long, env = "RDLOCK_CA_FILE", global = true, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// A client certificate (PEM), for servers that require one (tls-auth-clients yes).
    #[arg(long, env = "RDLOCK_CERT_FILE", global = true, value_name = "PEM", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "RDLOCK_KEY_FILE", global = true, value_name = "PEM", requires = "cert_file")]
    key_file: Option<PathBuf>,
}

impl TlsArgs {
    /// The client's settings: TLS ones when a file is named (read here: an unreadable file is
    /// a usage error, named in the message).
    fn config(&self) -> Result<ClientConfig, String> {
        let read =
            |path: &PathBuf| std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(ClientIdentity { cert_pem: read(cert)?, key_pem: read(key)? }),
            _ => None,
        };
        let ca_pem = self.ca_file.as_ref().map(read).transpose()?;
        let tls = (ca_pem.is_some() || identity.is_some()).then_some(TlsConfig { ca_pem, identity });
        Ok(ClientConfig { tls, ..ClientConfig::default() })
    }
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// Lease length; renewed at about a third of it while COMMAND runs.
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    ttl: Duration,
    /// Give up waiting after this long (exit 75). Waits for ever without it.
    #[arg(long, value_parser = duration::parse, conflicts_with = "try_once")]
    timeout: Option<Duration>,
    /// One attempt: exit 75 at once if the lock is busy.
    #[arg(long = "try", id = "try_once")]
    try_once: bool,
    /// Replicas that must hold the lock before COMMAND starts: all, majority, or a number;
    /// durable:N to have it fsynced on the primary and N replicas (WAITAOF, appendonly yes).
    #[arg(long, value_parser = parse_confirm)]
    confirm: Option<ConfirmArg>,
    /// Longest wait for the replicas' acknowledgement (with --confirm).
    #[arg(long, default_value = "1s", value_parser = duration::parse)]
    confirm_timeout: Duration,
    /// Time COMMAND has to exit after SIGTERM on a lost lease, before SIGKILL.
    #[arg(long, default_value = "5s", value_parser = duration::parse)]
    grace: Duration,
    /// The lock's key.
    key: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1.., value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum ConfirmArg {
    All,
    Majority,
    AtLeast(u32),
    Durable(u32),
}

fn parse_confirm(s: &str) -> Result<ConfirmArg, String> {
    match s {
        "all" => Ok(ConfirmArg::All),
        "majority" => Ok(ConfirmArg::Majority),
        _ if s.starts_with("durable:") => s["durable:".len()..]
            .parse()
            .map(ConfirmArg::Durable)
            .map_err(|_| format!("{s:?}: say durable:N, N the replicas besides the primary")),
        n => n.parse().map(ConfirmArg::AtLeast).map_err(|_| format!("{s:?}: say all, majority or a number")),
    }
}

impl ConfirmArg {
    fn with(self, timeout: Duration) -> Confirm {
        match self {
            ConfirmArg::All => Confirm::All { timeout },
            ConfirmArg::Majority => Confirm::Majority { timeout },
            ConfirmArg::AtLeast(replicas) => Confirm::AtLeast { replicas, timeout },
            ConfirmArg::Durable(replicas) => Confirm::Durable { replicas, timeout },
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            // --help and --version print in full; a usage error in one line (clap's first).
            // `rdlock` alone shows the help (on stderr: it is still a usage error).
            if code == 0 || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
            } else {
                // Clap's message is its lines up to the first blank one; joined into one.
                let text = e.render().to_string();
                let lines: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
                let line = lines.join(" ");
                eprintln!("rdlock: {} (see rdlock --help)", line.trim_start_matches("error: "));
            }
            return ExitCode::from(code);
        }
    };
    ExitCode::from(run(cli))
}

fn run(cli: Cli) -> u8 {
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(shell, &mut Cli::command(), "rdlock", &mut std::io::stdout());
        return 0;
    }
    let config = match cli.tls.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rdlock: {e}");
            return EX_USAGE;
        }
    };
    let client = match Client::open_with(&cli.url, config) {
        Ok(c) => c,
        Err(e) => return report(&e, &cli.url, &format!("cannot connect to {}", redact(&cli.url))),
    };
    let url = &cli.url;
    match cli.command {
        Command::Exec(args) => exec::run(&client, args, url),
        Command::Inspect { key, json } => match client.inspect(&key) {
            Ok(seen) => {
                if json {
                    println!("{}", view::json(&key, &seen));
                } else {
                    print!("{}", view::table(&key, &seen));
                }
                0
            }
            Err(e) => report(&e, url, &format!("cannot inspect {key:?}")),
        },
        Command::Release { force: _, key } => match client.force_release(&key) {
            Ok(done) => {
                let (code, what) = match done {
                    rdlock_blocking::ForceReleaseReply::HandedOff => (0, "released; handed to the first waiter"),
                    rdlock_blocking::ForceReleaseReply::Released => (0, "released; nobody was waiting"),
                    rdlock_blocking::ForceReleaseReply::NotHeld => (1, "was not held; nothing to release"),
                };
                println!("{key}: {what}");
                code
            }
            Err(e) => report(&e, url, &format!("cannot release {key:?}")),
        },
        Command::Watch { key, interval } => view::watch(&client, &key, interval, url),
        // Answered above, without a server.
        Command::Completions { .. } => 0,
    }
}

/// Prints `context: error` on one line (passwords scrubbed) and returns the error's exit code.
fn report(e: &Error, url: &str, context: &str) -> u8 {
    eprintln!("rdlock: {context}: {}", scrub(&e.to_string(), url));
    exit_code(e)
}

/// The documented exit code of an error.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::InvalidInput(_) => EX_USAGE,
        Error::NotALock { .. } => EX_DATAERR,
        Error::Lock(LockError::Server(s)) if s.code == "WRONGTYPE" => EX_DATAERR,
        Error::Lock(LockError::Server(s)) if matches!(s.code.as_str(), "NOAUTH" | "WRONGPASS") => EX_NOPERM,
        Error::NoPermission(_) => EX_NOPERM,
        Error::TimedOut => EX_BUSY,
        Error::Lost(_) => EX_LOST,
        Error::Redis(r) if r.kind() == redis::ErrorKind::AuthenticationFailed => EX_NOPERM,
        Error::Redis(r) if matches!(r.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM")) => EX_NOPERM,
        // Replicas that did not acknowledge in time are unavailable too (the lock was released).
        // TLS refused a certificate (or the settings): no server could be reached safely.
        Error::Redis(_)
        | Error::Tls(_)
        | Error::Sentinel(_)
        | Error::Lock(LockError::Transport(_))
        | Error::ReplicationShortfall { .. } => EX_UNAVAILABLE,
        _ => EX_SOFTWARE,
    }
}

/// The password of `url`, if it has one.
fn password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let auth = rest.split_once('@')?.0;
    auth.split_once(':').map(|(_, p)| p).filter(|p| !p.is_empty())
}

/// `url` with its password replaced by `***`.
fn redact(url: &str) -> String {
    scrub(url, url)
}

/// `text` with `url`'s password replaced by `***`.
fn scrub(text: &str, url: &str) -> String {
    match password(url) {
        Some(p) => text.replace(p, "***"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_scrubbed() {
        assert_eq!(redact("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact("redis://u:s3cret@h/"), "redis://u:***@h/");
        assert_eq!(redact("redis://h:6379/"), "redis://h:6379/");
        assert_eq!(scrub("auth s3cret failed", "redis+sentinel://:s3cret@a,b/m"), "auth *** failed");
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
