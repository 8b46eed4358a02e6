//! Sockets and framing: each shard accepts on its own SO_REUSEPORT listener, reads
//! size-prefixed request frames under the configured limits, runs each request as a task and
//! writes responses in request order (clients pipeline and match by order).

pub mod connection;
pub mod file_send;
pub mod transport;

use crate::config::Config;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Open connections of the whole broker, shared by the shards' acceptors (an accept is rare
/// next to requests, so one atomic and one lock there cost nothing measurable).
struct Connections {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

fn connections() -> &'static Connections {
    static C: OnceLock<Connections> = OnceLock::new();
    C.get_or_init(|| Connections {
        total: AtomicUsize::new(0),
        per_ip: Mutex::new(HashMap::new()),
    })
}

/// A connection's place under `max_connections` and `max_connections_per_ip`, given back when
/// dropped.
pub struct ConnSlot {
    ip: Option<IpAddr>,
}

impl ConnSlot {
    pub fn take(cfg: &Config, stream: &glommio::net::TcpStream) -> Result<ConnSlot, String> {
        let c = connections();
        if c.total.fetch_add(1, Ordering::AcqRel) >= cfg.max_connections {
            c.total.fetch_sub(1, Ordering::AcqRel);
            return Err(format!("max_connections ({}) reached", cfg.max_connections));
        }
        let ip = stream.peer_addr().ok().map(|a| a.ip());
        if let Some(ip) = ip {
            let mut per_ip = c.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.get(&ip).copied().unwrap_or(0);
            if n >= cfg.max_connections_per_ip {
                drop(per_ip);
                c.total.fetch_sub(1, Ordering::AcqRel);
                return Err(format!(
                    "max_connections_per_ip ({}) reached for {ip}",
                    cfg.max_connections_per_ip
                ));
            }
            per_ip.insert(ip, n + 1);
        }
        Ok(ConnSlot { ip })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let c = connections();
        c.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = c.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}
