//! The proxied connections: the accept loop, the registry of live connections
//! that [`FaultProxy`](super::FaultProxy) reaches them through, and one
//! connection's life (connecting upstream once traffic may flow, both directions'
//! pipelines, and how it ends: closed, failed, or cut).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use super::mode::{Direction, ProxyMode, wait_until_forwarding};
use super::pipeline::{Tap, forward};
use crate::cuts::{ClientTap, Cuts, Link, ServerTap};

/// How long connecting to the upstream server may take.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by the proxy handle, the accept task and the connections.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) upstream: SocketAddr,
    pub(super) mode: watch::Sender<ProxyMode>,
    pub(super) connections: Mutex<HashMap<u64, Registration>>,
    pub(super) next_id: AtomicU64,
    pub(super) cuts: Arc<Cuts>,
}

/// A live connection as seen by the registry.
#[derive(Debug)]
pub(super) struct Registration {
    /// Tells the connection to reset both of its sockets; it acknowledges
    /// through the enclosed sender once they are closed.
    pub(super) cut: oneshot::Sender<oneshot::Sender<()>>,
    /// Lets dropping the proxy abort the connection's task.
    pub(super) task: Option<AbortHandle>,
}

impl Shared {
    pub(super) fn connections(&self) -> MutexGuard<'_, HashMap<u64, Registration>> {
        // A panic while holding this lock leaves the map consistent (every
        // operation on it is a single insert/remove), so poisoning is ignored.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _peer)) => client,
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning; the listener
                // itself stays usable.
                tracing::warn!(error = %e, "fault proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if *shared.mode.borrow() == ProxyMode::Refuse {
            reset(client);
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (cut_tx, cut_rx) = oneshot::channel();
        shared.connections().insert(
            id,
            Registration {
                cut: cut_tx,
                task: None,
            },
        );
        let task = tokio::spawn(serve_connection(Arc::clone(&shared), id, client, cut_rx));
        // The task may already have finished and deregistered itself.
        if let Some(registration) = shared.connections().get_mut(&id) {
            registration.task = Some(task.abort_handle());
        }
    }
}

/// Removes a connection from the registry when its task ends, however it ends.
struct Deregister {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        self.shared.connections().remove(&self.id);
    }
}

/// How a proxied connection ended.
enum End {
    /// Both directions reached end-of-stream and forwarded it.
    Closed,
    /// A socket failed, or a protocol-aware cut was made; both sides are
    /// reset.
    Failed,
    /// [`FaultProxy::cut_all`](super::FaultProxy::cut_all) asked for a reset (with its acknowledgement
    /// channel, if it is still waiting).
    Cut(Option<oneshot::Sender<()>>),
}

async fn serve_connection(
    shared: Arc<Shared>,
    id: u64,
    mut client: TcpStream,
    mut cut: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let _deregister = Deregister {
        shared: Arc::clone(&shared),
        id,
    };
    let _ = client.set_nodelay(true);

    // A blackholed network does not let the handshake through either, so the
    // upstream connection is only made once traffic may flow.
    let connect = async {
        let mut mode = shared.mode.subscribe();
        wait_until_forwarding(&mut mode).await?;
        tokio::time::timeout(
            UPSTREAM_CONNECT_TIMEOUT,
            TcpStream::connect(shared.upstream),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream connect timed out"))?
    };
    let mut server = tokio::select! {
        biased;
        ack = &mut cut => {
            reset(client);
            acknowledge(ack.ok());
            return;
        }
        server = connect => match server {
            Ok(server) => server,
            Err(e) => {
                tracing::debug!(error = %e, upstream = %shared.upstream, "fault proxy: upstream unreachable");
                reset(client);
                return;
            }
        },
    };
    let _ = server.set_nodelay(true);

    let end = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let link = Link::new();
        let upstream = forward(
            Direction::ClientToServer,
            client_read,
            server_write,
            shared.mode.subscribe(),
            Tap::Client(ClientTap::new(Arc::clone(&link), Arc::clone(&shared.cuts))),
        );
        let downstream = forward(
            Direction::ServerToClient,
            server_read,
            client_write,
            shared.mode.subscribe(),
            Tap::Server(ServerTap::new(Arc::clone(&link))),
        );
        // `biased` so that once a cut is requested, not one more byte is
        // forwarded: the pipelines are dropped before they are polled again.
        tokio::select! {
            biased;
            ack = &mut cut => End::Cut(ack.ok()),
            result = async { tokio::try_join!(upstream, downstream) } => match result {
                Ok(_) => End::Closed,
                Err(_) => End::Failed,
            },
        }
    };
    match end {
        End::Closed => {}
        End::Failed => {
            reset(client);
            reset(server);
        }
        End::Cut(ack) => {
            reset(client);
            reset(server);
            acknowledge(ack);
        }
    }
}

fn acknowledge(ack: Option<oneshot::Sender<()>>) {
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
}

/// Closes `stream` with a TCP RST instead of an orderly FIN, so the peer sees
/// "connection reset" at once rather than a clean end-of-stream.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
