//! The intake: a loopback UDP listener speaking the daemon's wire format, and
//! beside it an abstract Unix datagram socket taking the same datagrams.
//!
//! It validates each datagram and hands documents to the forwarder without
//! ever waiting on it, so a slow daemon never slows the function down.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{UdpSocket, UnixDatagram};
use tokio::sync::{mpsc, oneshot};

use crate::counters::Counters;
use crate::forwarder::ForwarderHandle;
use crate::wire::{self, Datagram};

/// Kernel receive buffer asked for, to absorb bursts while the task is busy
/// (the kernel caps it at `net.core.rmem_max`).
const RECV_BUFFER: usize = 4 * 1024 * 1024;
/// Datagrams one drain reads at most: a function that keeps sending after
/// its response cannot keep the drain (and the `next` after it) going. The
/// rest is read by the intake's ordinary loop. About what the 4 MiB receive
/// buffer holds of small documents.
const DRAIN_MAX: usize = 4096;
/// Datagrams a drain reads from each socket before it lets the forwarder
/// take them: the extension runs on one thread, and the queue between the
/// two is bounded in bytes (`forwarder::QUEUE_BYTES`).
const DRAIN_CHUNK: usize = 256;

/// Cloneable handle to the intake task.
#[derive(Clone)]
pub struct IntakeHandle {
    drain: mpsc::Sender<oneshot::Sender<()>>,
}

impl IntakeHandle {
    /// Returns once the datagrams waiting in the socket (up to a bounded
    /// batch) have been handed to the forwarder: documents the function sent
    /// before its response are then in the buffer before the flush.
    pub async fn drain(&self) {
        let (reply, done) = oneshot::channel();
        if self.drain.send(reply).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// Binds the intake socket on `addr` (loopback).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
        log!(Debug, "cannot enlarge the intake receive buffer: {e}");
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds the abstract Unix datagram socket beside the UDP intake bound at
/// `udp` ([`lambda_xray_wire::unix_intake_name`]): the library sends there
/// when it can, for less CPU per datagram than UDP. `None` (logged) when it
/// cannot be bound: the function then sends over UDP, as to an older
/// extension.
pub fn bind_unix(udp: SocketAddr) -> Option<std::os::unix::net::UnixDatagram> {
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        let name = lambda_xray_wire::unix_intake_name(udp);
        let bound = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|addr| std::os::unix::net::UnixDatagram::bind_addr(&addr))
            .and_then(|socket| socket.set_nonblocking(true).map(|()| socket));
        match bound {
            Ok(socket) => Some(socket),
            Err(e) => {
                log!(Warn, "cannot listen on the Unix socket @{name}: {e}; the function will send over UDP");
                None
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = udp;
        None
    }
}

/// Starts the intake task on a socket from [`bind`], and the Unix socket
/// from [`bind_unix`] if there is one.
pub fn spawn(
    socket: std::net::UdpSocket,
    unix: Option<std::os::unix::net::UnixDatagram>,
    forwarder: ForwarderHandle,
    counters: Arc<Counters>,
    max_datagram: usize,
) -> std::io::Result<IntakeHandle> {
    let socket = UdpSocket::from_std(socket)?;
    let unix = unix.map(UnixDatagram::from_std).transpose()?;
    let (drain, requests) = mpsc::channel(4);
    let intake = Intake {
        socket,
        unix,
        requests,
        forwarder,
        counters,
        max_datagram,
        // One byte more than accepted, so an oversized datagram is seen as such.
        buf: vec![0; max_datagram + 1],
    };
    tokio::spawn(intake.run());
    Ok(IntakeHandle { drain })
}

/// Which of the two sockets a datagram is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Udp,
    Unix,
}

impl Source {
    fn other(self) -> Source {
        match self {
            Source::Udp => Source::Unix,
            Source::Unix => Source::Udp,
        }
    }
}

/// Datagrams read on one wake-up of the ordinary loop, before it looks at
/// drain requests again.
const READ_BATCH: usize = 64;

struct Intake {
    socket: UdpSocket,
    unix: Option<UnixDatagram>,
    requests: mpsc::Receiver<oneshot::Sender<()>>,
    forwarder: ForwarderHandle,
    counters: Arc<Counters>,
    max_datagram: usize,
    buf: Vec<u8>,
}

/// Waits until `unix` is readable; never, without one.
async fn unix_readable(unix: Option<&UnixDatagram>) -> std::io::Result<()> {
    match unix {
        Some(socket) => socket.readable().await,
        None => std::future::pending().await,
    }
}

impl Intake {
    async fn run(mut self) {
        loop {
            let source = tokio::select! {
                biased;
                Some(reply) = self.requests.recv() => {
                    let mut marks = Vec::new();
                    let mut read = 0;
                    while read < DRAIN_MAX {
                        let (udp, _) = self.read_from(Source::Udp, DRAIN_CHUNK, &mut marks);
                        let (unix, _) = self.read_from(Source::Unix, DRAIN_CHUNK, &mut marks);
                        read += udp + unix;
                        if udp < DRAIN_CHUNK && unix < DRAIN_CHUNK {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    self.offer_marks(marks);
                    let _ = reply.send(());
                    continue;
                }
                // The library's path first: an end read there waits for
                // what UDP holds (see `read_batch`).
                ready = unix_readable(self.unix.as_ref()) => ready.map(|()| Source::Unix),
                ready = self.socket.readable() => ready.map(|()| Source::Udp),
            };
            let (read, failed) = match source {
                Ok(source) => self.read_batch(source),
                Err(e) => (0, Some(e)),
            };
            if let Some(e) = failed {
                log!(Debug, "intake receive error: {e}");
                // Never spin on a persistent error.
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else if read >= READ_BATCH {
                // More waiting: let the other tasks (the forwarder, the loop
                // that calls `next`) run first. Readiness futures do not
                // count against tokio's budget, so this loop would not yield.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Reads what waits on `source` (up to [`READ_BATCH`]). If a datagram
    /// ends an invocation, what waits on the other socket is read before
    /// the end is offered: the library sends over UDP when the Unix queue
    /// is full, so documents of that invocation may be there. Returns how
    /// many were read from `source`, and an error other than "nothing left"
    /// (the caller pauses).
    fn read_batch(&mut self, source: Source) -> (usize, Option<std::io::Error>) {
        let mut marks = Vec::new();
        let (read, failed) = self.read_from(source, READ_BATCH, &mut marks);
        if !marks.is_empty() {
            self.read_from(source.other(), DRAIN_MAX, &mut marks);
        }
        self.offer_marks(marks);
        (read, failed)
    }

    /// Reads up to `max` datagrams waiting on `source` without waiting,
    /// offering documents at once and collecting the ends of invocations in
    /// `marks`. Returns how many it read, and the error that stopped it
    /// unless it was "nothing left".
    fn read_from(&mut self, source: Source, max: usize, marks: &mut Vec<String>) -> (usize, Option<std::io::Error>) {
        for read in 0..max {
            let received = match source {
                Source::Udp => self.socket.try_recv_from(&mut self.buf).map(|(len, _)| len),
                Source::Unix => match &self.unix {
                    Some(socket) => socket.try_recv(&mut self.buf),
                    None => return (read, None),
                },
            };
            match received {
                Ok(len) => marks.extend(self.take(len, source)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return (read, None),
                Err(e) => return (read, Some(e)),
            }
        }
        (max, None)
    }

    fn count_received(&self, source: Source) {
        Counters::bump(&self.counters.received);
        if source == Source::Unix {
            Counters::bump(&self.counters.received_unix);
        }
    }

    fn offer_marks(&self, marks: Vec<String>) {
        for request_id in marks {
            self.forwarder.offer_invocation_done(request_id);
        }
    }

    /// Handles one datagram; returns the request id it marks as ended, which
    /// the caller offers once it has read what may have been sent before it.
    fn take(&mut self, len: usize, source: Source) -> Option<String> {
        let datagram = &self.buf[..len];
        match wire::classify(datagram, self.max_datagram) {
            Ok(Datagram::Document) => {
                self.count_received(source);
                // The original bytes go to the daemon: no re-serialisation.
                if !self.forwarder.offer_document(Bytes::copy_from_slice(datagram)) {
                    Counters::bump(&self.counters.dropped);
                }
                None
            }
            Ok(Datagram::LastDocument { request_id, body_at }) => {
                self.count_received(source);
                // The daemon gets its plain header back.
                if !self.forwarder.offer_document(Bytes::from(wire::frame(&datagram[body_at..]))) {
                    Counters::bump(&self.counters.dropped);
                }
                Some(request_id)
            }
            Ok(Datagram::Control(message)) => {
                if let Some(address) = message.daemon_address {
                    self.forwarder.offer_daemon_address(address.into_owned());
                }
                message.invocation_done.map(|id| id.into_owned())
            }
            Err(rejection) => {
                Counters::bump(&self.counters.malformed);
                log!(Debug, "rejected a {len}-byte datagram: {rejection:?}");
                None
            }
        }
    }
}
