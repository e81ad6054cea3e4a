//! Picking free loopback ports.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Ports handed out recently by this process, so that two servers started at
/// the same moment by parallel tests are not given the same one.
static RECENT: Mutex<VecDeque<u16>> = Mutex::new(VecDeque::new());
const RECENT_CAP: usize = 256;

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding `127.0.0.1:0` and closing the socket again, so
/// another process may take it before it is used: the server starters in this
/// crate detect that and retry with a fresh port.
pub fn free_port() -> u16 {
    let mut recent = RECENT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..32 {
        let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) else {
            break;
        };
        let Ok(addr) = listener.local_addr() else {
            break;
        };
        let port = addr.port();
        if !recent.contains(&port) {
            remember(&mut recent, port);
            return port;
        }
    }
    // Binding to port 0 failing is next to impossible; fall back to a port the
    // caller's bind-and-retry loop will check anyway.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let port = 20_000 + u16::try_from(nanos % 30_000).unwrap_or(0);
    remember(&mut recent, port);
    port
}

fn remember(recent: &mut VecDeque<u16>, port: u16) {
    if recent.len() == RECENT_CAP {
        recent.pop_front();
    }
    recent.push_back(port);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, a)).is_ok());
    }
}
