//! Picking free TCP ports for test servers.
//!
//! Servers get ports *below* the kernel's ephemeral range. Ports handed out by
//! `bind(127.0.0.1:0)` come from the ephemeral range, which is also where every
//! outgoing connection (and every [`FaultProxy`](crate::FaultProxy) listener)
//! takes its local port from: a server that is restarted on a fixed ephemeral
//! port could find it taken by some unrelated client socket in the meantime.
//! Below the range only other servers compete, and they check before use.

use std::io;
use std::net::{Ipv4Addr, TcpListener};

/// Lowest port handed out; everything under it is left to well-known services
/// (this keeps us far away from 5432, the port of a developer's own server).
const LOWEST_PORT: u16 = 10_000;

/// Start of the ephemeral range when `/proc` does not tell (Linux default).
const DEFAULT_EPHEMERAL_START: u16 = 32_768;

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// There is an unavoidable window between this check and the server binding
/// the port, so callers retry with another port when the server reports
/// "address already in use".
pub fn pick_free_port() -> io::Result<u16> {
    let ephemeral_start = ephemeral_range_start().unwrap_or(DEFAULT_EPHEMERAL_START);
    if ephemeral_start > LOWEST_PORT + 1_000 {
        for _ in 0..200 {
            let port = rand::random_range(LOWEST_PORT..ephemeral_start);
            if is_free(port) {
                return Ok(port);
            }
        }
    }
    // A crowded machine or an odd ephemeral range: let the kernel choose.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn ephemeral_range_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Returns `count` distinct ports that were free a moment ago, for a server
/// that needs several (or a setup of several servers started together).
pub(crate) fn pick_free_ports(count: usize) -> io::Result<Vec<u16>> {
    let mut picked = Vec::with_capacity(count);
    while picked.len() < count {
        let port = pick_free_port()?;
        if !picked.contains(&port) {
            picked.push(port);
        }
    }
    Ok(picked)
}
