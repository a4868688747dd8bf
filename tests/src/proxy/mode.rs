//! What the proxy does to traffic ([`ProxyMode`]), switched at run time through a
//! `watch` channel every connection follows, and the direction bytes travel.

use std::io;
use std::time::Duration;

use tokio::sync::watch;

/// What the proxy does to traffic. Set with the methods of
/// [`FaultProxy`](crate::FaultProxy).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// Forward everything as fast as possible.
    #[default]
    Pass,
    /// Forward everything, each chunk delayed by this much in each direction
    /// (a round trip takes at least twice as long).
    Latency(Duration),
    /// A silent network: accept new connections but forward nothing in
    /// either direction and close nothing, on live connections too. Data is
    /// held, not dropped, and flows again when the mode changes.
    Blackhole,
    /// Reset new connections as soon as they are accepted, like a host with
    /// nothing listening; live connections keep forwarding.
    Refuse,
}

impl ProxyMode {
    /// Whether live connections may forward data in this mode.
    pub(super) fn forwards(&self) -> bool {
        !matches!(self, ProxyMode::Blackhole)
    }

    pub(super) fn latency(&self) -> Duration {
        match self {
            ProxyMode::Latency(delay) => *delay,
            _ => Duration::ZERO,
        }
    }
}

/// The direction bytes travel through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (e.g. a database driver) to the upstream server.
    ClientToServer,
    /// From the upstream server back to the client.
    ServerToClient,
}

/// Waits until the mode lets data through.
pub(super) async fn wait_until_forwarding(mode: &mut watch::Receiver<ProxyMode>) -> io::Result<()> {
    mode.wait_for(ProxyMode::forwards)
        .await
        .map(|_| ())
        .map_err(|_| io::Error::other("fault proxy stopped"))
}
