//! The intake: a loopback UDP listener speaking the daemon's wire format.
//!
//! It validates each datagram and hands documents to the forwarder without
//! ever waiting on it, so a slow daemon never slows the function down.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::counters::Counters;
use crate::forwarder::ForwarderHandle;
use crate::wire::{self, Datagram};

/// Kernel receive buffer asked for, to absorb bursts while the task is busy
/// (the kernel caps it at `net.core.rmem_max`).
const RECV_BUFFER: usize = 4 * 1024 * 1024;
/// Datagrams one drain reads at most: a function that keeps sending after
/// its response cannot keep the drain (and the `next` after it) going. The
/// rest is read by the intake's ordinary loop.
const DRAIN_MAX: usize = 1024;

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

/// Starts the intake task on a socket from [`bind`].
pub fn spawn(
    socket: std::net::UdpSocket,
    forwarder: ForwarderHandle,
    counters: Arc<Counters>,
    max_datagram: usize,
) -> std::io::Result<IntakeHandle> {
    let socket = UdpSocket::from_std(socket)?;
    let (drain, requests) = mpsc::channel(4);
    let intake = Intake {
        socket,
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

struct Intake {
    socket: UdpSocket,
    requests: mpsc::Receiver<oneshot::Sender<()>>,
    forwarder: ForwarderHandle,
    counters: Arc<Counters>,
    max_datagram: usize,
    buf: Vec<u8>,
}

impl Intake {
    async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                Some(reply) = self.requests.recv() => {
                    for _ in 0..DRAIN_MAX {
                        match self.socket.try_recv_from(&mut self.buf) {
                            Ok((len, _)) => self.take(len),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => {
                                log!(Debug, "intake receive error: {e}");
                                break;
                            }
                        }
                    }
                    let _ = reply.send(());
                }
                received = self.socket.recv_from(&mut self.buf) => match received {
                    Ok((len, _)) => self.take(len),
                    Err(e) => {
                        log!(Debug, "intake receive error: {e}");
                        // Never spin on a persistent error.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                },
            }
        }
    }

    fn take(&mut self, len: usize) {
        let datagram = &self.buf[..len];
        match wire::classify(datagram, self.max_datagram) {
            Ok(Datagram::Document) => {
                Counters::bump(&self.counters.received);
                // The original bytes go to the daemon: no re-serialisation.
                if !self.forwarder.offer_document(Bytes::copy_from_slice(datagram)) {
                    Counters::bump(&self.counters.dropped);
                }
            }
            Ok(Datagram::LastDocument { request_id, body_at }) => {
                Counters::bump(&self.counters.received);
                // The daemon gets its plain header back.
                if !self.forwarder.offer_document(Bytes::from(wire::frame(&datagram[body_at..]))) {
                    Counters::bump(&self.counters.dropped);
                }
                self.forwarder.offer_invocation_done(request_id);
            }
            Ok(Datagram::Control(message)) => {
                if let Some(address) = message.daemon_address {
                    self.forwarder.offer_daemon_address(address.into_owned());
                }
                if let Some(request_id) = message.invocation_done {
                    self.forwarder.offer_invocation_done(request_id.into_owned());
                }
            }
            Err(rejection) => {
                Counters::bump(&self.counters.malformed);
                log!(Debug, "rejected a {len}-byte datagram: {rejection:?}");
            }
        }
    }
}
