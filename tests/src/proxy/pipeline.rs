//! One direction of a proxied connection: a read stage that timestamps (and, for
//! protocol-aware cuts, frames) what it reads, and a write stage that releases it
//! when the mode allows: not blackholed, its latency elapsed.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::mode::{Direction, ProxyMode, wait_until_forwarding};
use crate::cuts::{ClientStep, ClientTap, CutOrder, Cuts, Link, ServerTap};

/// Size of one read; a chunk is whatever one read returned.
const CHUNK_SIZE: usize = 16 * 1024;

/// Chunks that may wait between the read and the write stage of one
/// direction; beyond that the read stage stops reading (back-pressure), which
/// bounds memory while latency or a blackhole holds data back.
const PIPELINE_DEPTH: usize = 64;

/// What travels from the read stage to the write stage of one direction.
enum Event {
    /// Bytes, in order, with the time they were read.
    Data { bytes: Vec<u8>, read_at: Instant },
    /// The reader reached end-of-stream; the writer shuts its side down.
    Eof { read_at: Instant },
    /// A protocol-aware cut, carried out once the bytes before it are
    /// written: the direction fails, and the connection is reset.
    Cut { order: CutOrder, read_at: Instant },
    /// The server side holds back replies from here on: everything before
    /// is written (a pending cut waits for this).
    Drained { read_at: Instant },
}

/// The protocol-aware part of a direction's read stage.
pub(super) enum Tap {
    Client(ClientTap),
    Server(ServerTap),
}

impl Tap {
    /// The link both directions share, for the write stage's cut orders.
    fn link(&self) -> Arc<Link> {
        match self {
            Tap::Client(tap) => tap.link(),
            Tap::Server(tap) => tap.link(),
        }
    }

    fn cuts(&self) -> Option<Arc<Cuts>> {
        match self {
            Tap::Client(tap) => Some(tap.cuts()),
            Tap::Server(_) => None,
        }
    }

    /// What to forward of a chunk, and what to do after it.
    fn process(&mut self, bytes: Vec<u8>, read_at: Instant) -> (Vec<u8>, Option<Event>) {
        match self {
            Tap::Client(tap) => match tap.process(bytes) {
                ClientStep::Forward(bytes) => (bytes, None),
                ClientStep::Cut(bytes, order) => (bytes, Some(Event::Cut { order, read_at })),
            },
            Tap::Server(tap) => match tap.process(bytes) {
                (bytes, false) => (bytes, None),
                (bytes, true) => (bytes, Some(Event::Drained { read_at })),
            },
        }
    }

    /// Bytes held back when the stream ended.
    fn finish(&mut self) -> Vec<u8> {
        match self {
            Tap::Client(tap) => tap.finish(),
            Tap::Server(_) => Vec::new(),
        }
    }
}

/// Forwards one direction of a connection until end-of-stream (forwarded as
/// a write shutdown) or an error.
///
/// The read stage reads as fast as the pipeline depth allows; the write stage
/// releases each event once the mode allows forwarding and the mode's latency
/// has passed since the event was read. Both stages run concurrently in the
/// caller's task, so dropping the returned future stops the direction at once.
pub(super) async fn forward<R, W>(
    direction: Direction,
    mut reader: R,
    mut writer: W,
    mut mode: watch::Receiver<ProxyMode>,
    mut tap: Tap,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Event>(PIPELINE_DEPTH);
    let link = tap.link();
    let cuts = tap.cuts();

    let read_stage = async move {
        loop {
            let mut bytes = vec![0u8; CHUNK_SIZE];
            let n = reader.read(&mut bytes).await?;
            let read_at = Instant::now();
            if n == 0 {
                let held = tap.finish();
                if !held.is_empty() {
                    let data = Event::Data {
                        bytes: held,
                        read_at,
                    };
                    if tx.send(data).await.is_err() {
                        return Ok(());
                    }
                }
                let _ = tx.send(Event::Eof { read_at }).await;
                return Ok::<(), io::Error>(());
            }
            bytes.truncate(n);
            let (bytes, then) = tap.process(bytes, read_at);
            if !bytes.is_empty() && tx.send(Event::Data { bytes, read_at }).await.is_err() {
                return Ok(());
            }
            if let Some(event) = then {
                // Nothing after a cut point is read, let alone forwarded.
                let cut = matches!(event, Event::Cut { .. });
                if tx.send(event).await.is_err() || cut {
                    return Ok(());
                }
            }
        }
    };

    let write_stage = async move {
        while let Some(event) = rx.recv().await {
            let read_at = match &event {
                Event::Data { read_at, .. }
                | Event::Eof { read_at }
                | Event::Cut { read_at, .. }
                | Event::Drained { read_at } => *read_at,
            };
            release_at(&mut mode, read_at).await?;
            match event {
                Event::Data { bytes, .. } => writer.write_all(&bytes).await?,
                Event::Eof { .. } => {
                    writer.shutdown().await?;
                    return Ok(());
                }
                Event::Drained { .. } => link.mark_drained(),
                Event::Cut { order, .. } => {
                    let cuts = cuts.as_deref().expect("only the client side cuts");
                    return Err(order.execute(&link, cuts).await);
                }
            }
        }
        Ok::<(), io::Error>(())
    };

    tokio::try_join!(read_stage, write_stage)
        .map(|_| ())
        .map_err(|e| {
            tracing::trace!(?direction, error = %e, "fault proxy direction failed");
            e
        })
}

/// Waits until an event read at `read_at` may be written: the mode forwards
/// and its latency has elapsed since `read_at`. Re-checks after sleeping, so a
/// blackhole that starts during the delay holds the event back.
async fn release_at(mode: &mut watch::Receiver<ProxyMode>, read_at: Instant) -> io::Result<()> {
    loop {
        wait_until_forwarding(mode).await?;
        let latency = mode.borrow().latency();
        tokio::time::sleep_until(read_at + latency).await;
        if mode.borrow().forwards() {
            return Ok(());
        }
    }
}
