//! Sending documents to the X-Ray daemon over UDP, or to the extension
//! (over its Unix socket when it has one).
//!
//! One datagram = `{"format":"json","version":1}` + `\n` + one JSON document.
//! Documents that would not fit in one datagram are split (children sent as
//! their own documents), never truncated. Sending never blocks: the socket is
//! non-blocking, and failures are counted, not returned to the handler.

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lambda_xray_wire::ControlMessage;

use crate::config::Config;
use crate::document::{Document, Finished};

/// Largest datagram sent, header included. The daemon reads
/// [`lambda_xray_wire::MAX_DATAGRAM_BYTES`] (64 KiB); like the Java SDK we stay
/// a little under.
pub const MAX_DATAGRAM_BYTES: usize = lambda_xray_wire::MAX_DATAGRAM_BYTES - 1024;

pub use lambda_xray_wire::DEFAULT_DAEMON_ADDRESS;

/// Where datagrams go. Implementations must not block.
pub trait Transport: Send + Sync + 'static {
    /// Sends one datagram.
    fn send(&self, datagram: &[u8]) -> io::Result<()>;
}

/// A connected, non-blocking UDP socket.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    target: SocketAddr,
}

impl UdpTransport {
    /// Binds an ephemeral local port and connects it to `target`, so the kernel
    /// reports "connection refused" when nothing listens there.
    pub fn connect(target: SocketAddr) -> io::Result<Self> {
        let local: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let socket = UdpSocket::bind(local)?;
        socket.connect(target)?;
        socket.set_nonblocking(true)?;
        Ok(UdpTransport { socket, target })
    }

    /// The address datagrams go to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }
}

impl Transport for UdpTransport {
    fn send(&self, datagram: &[u8]) -> io::Result<()> {
        self.socket.send(datagram).map(|_| ())
    }
}

/// The extension's intake: its abstract Unix datagram socket
/// ([`lambda_xray_wire::unix_intake_name`]) when it has one, its UDP socket
/// otherwise. On this VM a 1.7 KB datagram costs the sender about 4.6 µs
/// of CPU over Unix against 9.3 µs over UDP's loopback (no reader woken).
///
/// The kernel queues only a few datagrams per Unix socket
/// (`net.unix.max_dgram_qlen`, often 10) and counts them against the
/// sender's buffer: when the queue is full, this sends over UDP instead,
/// and keeps to UDP until a datagram that ends an invocation has gone out
/// that way, so that the end never overtakes the documents before it (the
/// extension reads the other socket before acting on an end).
#[derive(Debug)]
struct ExtensionIntake {
    unix: Option<std::os::unix::net::UnixDatagram>,
    udp: UdpTransport,
    /// Set when the Unix queue was full: UDP until the next end.
    over_udp: AtomicBool,
}

impl ExtensionIntake {
    fn connect(target: SocketAddr) -> io::Result<Self> {
        let udp = UdpTransport::connect(target)?;
        Ok(ExtensionIntake { unix: connect_unix(target), udp, over_udp: AtomicBool::new(false) })
    }
}

/// A non-blocking socket connected to the Unix intake beside the extension's
/// UDP `target`, or `None` when nobody listens there (an older extension).
fn connect_unix(target: SocketAddr) -> Option<std::os::unix::net::UnixDatagram> {
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        let name = lambda_xray_wire::unix_intake_name(target);
        let socket = std::os::unix::net::UnixDatagram::unbound().ok()?;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
        socket.connect_addr(&addr).ok()?;
        socket.set_nonblocking(true).ok()?;
        Some(socket)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = target;
        None
    }
}

/// Whether `datagram` ends an invocation (or is a control message, which
/// the extension reads in order with the ends).
fn ends_invocation(datagram: &[u8]) -> bool {
    // The header as `Emitter::insert_mark` opens it up: all but its `}\n`.
    let open = &wire_header()[..wire_header().len() - 2];
    datagram.strip_prefix(open).is_some_and(|rest| rest.starts_with(MARK_FIELD)) || datagram.starts_with(control_header())
}

/// The field a marked document's header gets (then the request id).
const MARK_FIELD: &[u8] = b",\"invocation_done\":";

impl Transport for ExtensionIntake {
    fn send(&self, datagram: &[u8]) -> io::Result<()> {
        if let Some(unix) = &self.unix
            && !self.over_udp.load(Ordering::Relaxed)
        {
            match unix.send(datagram) {
                Ok(_) => return Ok(()),
                // Queue or buffer full, or bigger than the buffer: UDP takes it.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) || e.raw_os_error() == Some(EMSGSIZE) => {
                    self.over_udp.store(true, Ordering::Relaxed);
                }
                // Refused: the extension is gone (the emitter falls back to the daemon).
                Err(e) => return Err(e),
            }
        }
        let sent = self.udp.send(datagram);
        if ends_invocation(datagram) {
            self.over_udp.store(false, Ordering::Relaxed);
        }
        sent
    }
}

/// Linux's `EMSGSIZE`.
const EMSGSIZE: i32 = 90;

/// Parses `AWS_XRAY_DAEMON_ADDRESS`: `host:port`, or `tcp:host:port udp:host:port`
/// in either order. Returns the UDP address.
pub(crate) fn parse_daemon_address(s: &str) -> Result<SocketAddr, String> {
    let udp = lambda_xray_wire::daemon_udp_part(s)
        .ok_or_else(|| format!("{:?} must be host:port or \"tcp:host:port udp:host:port\"", s.trim()))?;
    udp.to_socket_addrs().map_err(|e| format!("{udp:?}: {e}"))?.next().ok_or_else(|| format!("{udp:?} resolves to no address"))
}

/// Counters kept by an [`Emitter`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EmitterStats {
    /// Datagrams handed to the transport successfully.
    pub datagrams_sent: u64,
    /// Datagrams the transport refused (daemon or extension missing, buffer full...).
    pub send_errors: u64,
    /// Documents that were too big for one datagram and were split.
    pub documents_split: u64,
    /// Values (metadata, annotations...) removed because a single document could
    /// not fit in a datagram even on its own.
    pub values_dropped: u64,
    /// Documents that could not be made to fit at all and were not sent.
    pub documents_dropped: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    errors: AtomicU64,
    split: AtomicU64,
    values_dropped: AtomicU64,
    docs_dropped: AtomicU64,
}

/// Serialises documents into datagrams and hands them to a [`Transport`].
pub struct Emitter {
    primary: Box<dyn Transport>,
    /// Used once the primary (the extension) has refused a datagram.
    fallback: Option<Box<dyn Transport>>,
    use_fallback: AtomicBool,
    /// Whether `primary` is the lambda-xray extension (which also takes the
    /// control datagrams).
    to_extension: bool,
    counters: Counters,
    max_datagram: usize,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

thread_local! {
    /// The request id of the invocation ending on this thread, while its
    /// handler subsegment goes out (see [`with_invocation_done`]).
    static ENDING: Cell<Option<String>> = const { Cell::new(None) };
}

/// Runs `f`, which ends an invocation's handler subsegment: the document it
/// sends to the extension carries `request_id` in its header as the end of
/// the invocation. Returns `f`'s result, and the request id back when no
/// document carried it (unsampled, untraced, not to the extension...), so
/// the caller sends the control message instead.
pub(crate) fn with_invocation_done<T>(request_id: String, f: impl FnOnce() -> T) -> (T, Option<String>) {
    let mut id = Some(request_id);
    let set = ENDING.try_with(|c| c.set(id.take())).is_ok();
    let out = f();
    let left = if set { ENDING.try_with(Cell::take).ok().flatten() } else { id };
    (out, left)
}

/// `line` and its newline, made once.
fn header_line(cell: &'static OnceLock<Vec<u8>>, line: &str) -> &'static [u8] {
    cell.get_or_init(|| [line.as_bytes(), b"\n"].concat())
}

/// The header line of a control datagram, with its newline.
fn control_header() -> &'static [u8] {
    static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
    header_line(&HEADER, lambda_xray_wire::CONTROL_HEADER)
}

/// The daemon's header line, with its newline.
fn wire_header() -> &'static [u8] {
    static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
    header_line(&HEADER, lambda_xray_wire::DOCUMENT_HEADER)
}

impl Emitter {
    /// An emitter that sends through `transport` (the daemon's wire format:
    /// documents only).
    pub fn new(transport: impl Transport) -> Self {
        Emitter {
            primary: Box::new(transport),
            fallback: None,
            use_fallback: AtomicBool::new(false),
            to_extension: false,
            counters: Counters::default(),
            max_datagram: MAX_DATAGRAM_BYTES,
        }
    }

    /// An emitter that sends to the lambda-xray extension through `transport`:
    /// the documents, and the control datagrams only the extension
    /// understands (the end of each invocation; see the extension's README).
    /// Control datagrams never go to a [`with_fallback`](Emitter::with_fallback)
    /// transport, which is the daemon.
    pub fn for_extension(transport: impl Transport) -> Self {
        Emitter { to_extension: true, ..Emitter::new(transport) }
    }

    /// Whether control datagrams are sent: the primary transport is the
    /// extension and has not been given up for the fallback.
    pub fn sends_to_extension(&self) -> bool {
        self.to_extension && !self.use_fallback.load(Ordering::Relaxed)
    }

    /// Uses `fallback` once `primary` refuses a datagram (e.g. the extension died).
    pub fn with_fallback(mut self, fallback: impl Transport) -> Self {
        self.fallback = Some(Box::new(fallback));
        self
    }

    /// Lowers the datagram size limit (tests).
    pub fn with_max_datagram(mut self, bytes: usize) -> Self {
        self.max_datagram = bytes.min(MAX_DATAGRAM_BYTES);
        self
    }

    /// Builds the emitter `config` asks for: the extension if it is configured
    /// or announces itself through its marker file, with the daemon as
    /// fallback; otherwise the daemon. Bad addresses are logged and replaced by
    /// the default.
    pub fn from_config(config: &Config) -> Self {
        let daemon = match config.daemon_address.as_deref().map(parse_daemon_address) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => {
                tracing::error!(target: "lambda_xray", "AWS_XRAY_DAEMON_ADDRESS {e}; using {DEFAULT_DAEMON_ADDRESS}");
                None
            }
        };
        let daemon = daemon.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 2000)));
        let extension = config.extension_address.clone().or_else(|| std::fs::read_to_string(&config.extension_marker).ok()).and_then(|a| {
            match parse_daemon_address(&a) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    tracing::error!(target: "lambda_xray", "extension address {e}; sending to the daemon");
                    None
                }
            }
        });
        let daemon_transport = UdpTransport::connect(daemon);
        match (extension.map(ExtensionIntake::connect), daemon_transport) {
            (Some(Ok(ext)), daemon) => {
                let target = ext.udp.target();
                let over = if ext.unix.is_some() { "its Unix socket" } else { "UDP" };
                let mut emitter = Emitter::for_extension(ext);
                if let Ok(d) = daemon {
                    emitter = emitter.with_fallback(d);
                }
                if let Some(addr) = config.daemon_address.as_deref() {
                    emitter.send_control(addr);
                }
                tracing::debug!(target: "lambda_xray", "sending trace documents to the extension at {target}, over {over}");
                emitter
            }
            (_, Ok(d)) => Emitter::new(d),
            (_, Err(e)) => {
                tracing::error!(target: "lambda_xray", "cannot open a UDP socket ({e}); trace documents will be dropped");
                Emitter::new(NullTransport)
            }
        }
    }

    /// Tells the extension where the daemon is.
    fn send_control(&self, daemon_address: &str) {
        self.send_control_message(&ControlMessage { daemon_address: Some(daemon_address.into()), ..Default::default() });
    }

    /// Tells the extension that every document of the invocation `request_id`
    /// has been sent, so it can flush without waiting for the platform. Only
    /// when sending to the extension; never an error.
    pub(crate) fn send_invocation_done(&self, request_id: &str) {
        self.send_control_message(&ControlMessage { invocation_done: Some(request_id.into()), ..Default::default() });
    }

    /// Sends one control datagram to the extension, never to the fallback
    /// (the daemon does not know the format).
    fn send_control_message(&self, body: &ControlMessage<'_>) {
        if !self.sends_to_extension() {
            return;
        }
        let header = control_header();
        let mut buf = Vec::with_capacity(header.len() + 96);
        buf.extend_from_slice(header);
        if serde_json::to_writer(&mut buf, body).is_err() {
            return;
        }
        // Never to the fallback: the daemon does not know the format.
        self.count(&self.send_primary(&buf));
    }

    fn count(&self, result: &io::Result<()>) {
        match result {
            Ok(()) => self.counters.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.errors.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EmitterStats {
        let c = &self.counters;
        EmitterStats {
            datagrams_sent: c.sent.load(Ordering::Relaxed),
            send_errors: c.errors.load(Ordering::Relaxed),
            documents_split: c.split.load(Ordering::Relaxed),
            values_dropped: c.values_dropped.load(Ordering::Relaxed),
            documents_dropped: c.docs_dropped.load(Ordering::Relaxed),
        }
    }

    fn send_datagram(&self, datagram: &[u8]) {
        let result = match (&self.fallback, self.use_fallback.load(Ordering::Relaxed)) {
            (Some(fb), true) => fb.send(datagram),
            (fb, _) => match (self.send_primary(datagram), fb) {
                (Err(e), Some(fb)) if e.kind() == io::ErrorKind::ConnectionRefused => fb.send(datagram),
                (result, _) => result,
            },
        };
        self.count(&result);
    }

    /// Sends to the primary transport; when it refuses and there is a
    /// fallback, switches to the fallback for what follows (the caller
    /// decides what to do with this datagram). Not counted.
    fn send_primary(&self, datagram: &[u8]) -> io::Result<()> {
        let result = self.primary.send(datagram);
        if let Err(e) = &result
            && e.kind() == io::ErrorKind::ConnectionRefused
            && self.fallback.is_some()
        {
            tracing::warn!(target: "lambda_xray", "the X-Ray extension is not listening; sending to the daemon directly");
            self.use_fallback.store(true, Ordering::Relaxed);
        }
        result
    }

    fn encode(doc: &Document, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        buf.extend_from_slice(wire_header());
        crate::encode::write_document(doc, buf).is_ok()
    }

    /// Sends a document that stands on its own (`trace_id` set, and for
    /// subsegments `type` and `parent_id`), splitting it if it is too big.
    pub fn emit(&self, doc: Document) {
        self.emit_tree(Finished::leaf(doc));
    }

    /// As [`Self::emit`], for a finished subtree as the invocation keeps it.
    pub(crate) fn emit_tree(&self, doc: Finished) {
        thread_local! {
            // One encoding buffer per thread, kept between documents.
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        // The end-of-invocation mark rides on this document, if one is due.
        let mark = if self.sends_to_extension() { ENDING.try_with(Cell::take).ok().flatten() } else { None };
        let mut marked = false;
        let mut doc = Some(doc);
        let _ = BUF.try_with(|b| {
            if let Ok(mut buf) = b.try_borrow_mut()
                && let Some(doc) = doc.take()
            {
                marked = self.emit_tree_with(doc, &mut buf, mark.as_deref());
                // Don't keep a big buffer around after a big document.
                if buf.capacity() > 2 * MAX_DATAGRAM_BYTES {
                    *buf = Vec::new();
                }
            }
        });
        // The thread is exiting, or this is a nested call: a buffer of its own.
        if let Some(doc) = doc {
            marked = self.emit_tree_with(doc, &mut Vec::with_capacity(1024), mark.as_deref());
        }
        if !marked && mark.is_some() {
            let _ = ENDING.try_with(|c| c.set(mark));
        }
    }

    /// Sends `tree`: as it is when it fits one datagram, else split (see
    /// [`Self::emit_with`]). Returns whether `mark` went out.
    fn emit_tree_with(&self, tree: Finished, buf: &mut Vec<u8>, mark: Option<&str>) -> bool {
        buf.clear();
        buf.extend_from_slice(wire_header());
        // The mark goes into the header before the document is written, so
        // nothing is moved afterwards.
        let field = match mark {
            Some(request_id) => Self::insert_mark(buf, request_id),
            None => 0,
        };
        if crate::encode::write_tree(&tree, buf).is_ok() {
            let sent = if buf.len() <= self.max_datagram {
                Some(self.send_marked(buf, field))
            } else if field > 0 && buf.len() - field <= self.max_datagram {
                // Fits without the mark: send it plain, the mark goes on its own.
                Self::remove_mark(buf, field);
                self.send_datagram(buf);
                Some(false)
            } else {
                None
            };
            if let Some(sent) = sent {
                crate::pool::recycle(tree);
                return sent;
            }
        }
        self.emit_with(tree.into_document(), buf, mark)
    }

    /// Adds `,"invocation_done":"<request_id>"` to the header line at the
    /// start of `buf`; returns its length.
    fn insert_mark(buf: &mut Vec<u8>, request_id: &str) -> usize {
        // `{"format":"json","version":1` + the field + `}\n`
        let at = wire_header().len() - 2;
        buf.truncate(at);
        buf.extend_from_slice(MARK_FIELD);
        crate::encode::write_json_str(request_id, buf);
        let field = buf.len() - at;
        buf.extend_from_slice(b"}\n");
        field
    }

    /// Takes the `field`-byte mark [`Self::insert_mark`] added back out.
    fn remove_mark(buf: &mut Vec<u8>, field: usize) {
        let at = wire_header().len() - 2;
        buf.drain(at..at + field);
    }

    /// Sends a datagram whose header carries a `field`-byte mark (none when
    /// 0) to the extension; returns whether the mark went out. If the
    /// extension is not listening the daemon gets it with the plain header.
    fn send_marked(&self, buf: &mut Vec<u8>, field: usize) -> bool {
        if field == 0 {
            self.send_datagram(buf);
            return false;
        }
        let result = self.send_primary(buf);
        if let Err(e) = &result
            && e.kind() == io::ErrorKind::ConnectionRefused
            && let Some(fallback) = &self.fallback
        {
            Self::remove_mark(buf, field);
            self.count(&fallback.send(buf));
            return false;
        }
        self.count(&result);
        result.is_ok()
    }

    /// Sends `doc`; the last datagram carries `mark` in its header when it
    /// fits. Returns whether it did.
    fn emit_with(&self, mut doc: Document, buf: &mut Vec<u8>, mark: Option<&str>) -> bool {
        if !Self::encode(&doc, buf) {
            self.counters.docs_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if buf.len() <= self.max_datagram {
            return self.send_last(buf, mark);
        }
        self.counters.split.fetch_add(1, Ordering::Relaxed);
        let children = std::mem::take(&mut doc.subsegments);
        if !self.shrink_to_fit(&mut doc, buf) {
            self.counters.docs_dropped.fetch_add(1, Ordering::Relaxed);
            // The children can still go on their own.
        }
        let own = buf.len();
        // `,"subsegments":[` + `]` around the kept children.
        let mut budget = self.max_datagram.saturating_sub(own + 18);
        let mut kept = Vec::new();
        for child in children {
            let size = serde_json::to_vec(&child).map(|v| v.len() + 1).unwrap_or(usize::MAX);
            if size <= budget {
                budget -= size;
                kept.push(child);
            } else {
                let mut child = child;
                child.trace_id = doc.trace_id;
                child.parent_id = Some(doc.id);
                child.kind = Some("subsegment".to_owned());
                self.emit_with(child, buf, None);
            }
        }
        doc.subsegments = kept;
        if Self::encode(&doc, buf) && buf.len() <= self.max_datagram {
            self.send_last(buf, mark)
        } else {
            self.counters.docs_dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Sends the encoded document in `buf`, with `mark` (a request id) added
    /// to its header line when given and it still fits: one datagram that is
    /// both the invocation's last document and its end (the extension takes
    /// the mark off before forwarding). Only to the extension; returns
    /// whether the mark went out.
    fn send_last(&self, buf: &mut Vec<u8>, mark: Option<&str>) -> bool {
        let Some(request_id) = mark else {
            self.send_datagram(buf);
            return false;
        };
        let mut header = Vec::with_capacity(wire_header().len() + request_id.len() + 24);
        header.extend_from_slice(wire_header());
        let field = Self::insert_mark(&mut header, request_id);
        if buf.len() + field > self.max_datagram {
            self.send_datagram(buf);
            return false;
        }
        buf.splice(..wire_header().len(), header);
        self.send_marked(buf, field)
    }

    /// Removes the biggest values from `doc` (no children) until it fits,
    /// recording what was removed in `lambda_xray` metadata. Leaves the
    /// encoding in `buf`. Returns false if it can't be made to fit.
    fn shrink_to_fit(&self, doc: &mut Document, buf: &mut Vec<u8>) -> bool {
        let mut removed: Vec<String> = Vec::new();
        loop {
            if !Self::encode(doc, buf) {
                return false;
            }
            if buf.len() <= self.max_datagram.saturating_sub(512) {
                break;
            }
            if let Some((ns, key, size)) = doc.metadata.remove_largest() {
                removed.push(format!("metadata {ns}.{key} ({size} bytes)"));
            } else if let Some(cause) = doc.cause.as_mut().and_then(|c| match c {
                crate::document::Cause::Details(d) if d.exceptions.len() > 1 => Some(d),
                _ => None,
            }) {
                cause.exceptions.truncate(1);
                removed.push("cause exceptions after the first".to_owned());
            } else if let Some(aws) = doc.aws.as_mut().filter(|a| !a.extra.is_empty()) {
                aws.extra.clear();
                removed.push("aws parameters".to_owned());
            } else if !doc.annotations.is_empty() {
                doc.annotations = Default::default();
                removed.push("annotations".to_owned());
            } else {
                return false;
            }
            self.counters.values_dropped.fetch_add(1, Ordering::Relaxed);
        }
        if !removed.is_empty() {
            let note = serde_json::value::to_raw_value(&removed).ok();
            let mut meta = std::mem::take(&mut doc.metadata);
            if let Some(note) = note {
                let _ = meta.insert("lambda_xray", "removed_to_fit_64KiB", note);
            }
            doc.metadata = meta;
            return Self::encode(doc, buf) && buf.len() <= self.max_datagram;
        }
        true
    }
}

/// A transport that drops everything (used when no socket can be opened).
#[derive(Debug, Clone, Copy)]
pub struct NullTransport;

impl Transport for NullTransport {
    fn send(&self, _: &[u8]) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::NotConnected, "no transport"))
    }
}

#[cfg(any(test, feature = "testing"))]
pub use memory::MemoryTransport;

#[cfg(any(test, feature = "testing"))]
mod memory {
    use super::*;

    /// A transport that keeps every datagram in memory: for tests of code that
    /// traces (`XRayLayer::with_emitter(config, Arc::new(Emitter::new(memory.clone())))`).
    #[derive(Debug, Clone, Default)]
    pub struct MemoryTransport(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

    impl Transport for MemoryTransport {
        fn send(&self, datagram: &[u8]) -> io::Result<()> {
            self.0.lock().map_err(|_| io::Error::other("poisoned"))?.push(datagram.to_vec());
            Ok(())
        }
    }

    impl MemoryTransport {
        /// Every datagram so far.
        pub fn datagrams(&self) -> Vec<Vec<u8>> {
            self.0.lock().map(|v| v.clone()).unwrap_or_default()
        }

        /// Every document so far, parsed; a datagram that is not the daemon's
        /// header line plus one JSON document becomes `Value::Null`.
        pub fn documents(&self) -> Vec<serde_json::Value> {
            self.datagrams()
                .iter()
                .map(|d| {
                    let header = wire_header();
                    d.strip_prefix(header).and_then(|body| serde_json::from_slice(body).ok()).unwrap_or(serde_json::Value::Null)
                })
                .collect()
        }

        /// Forgets what was sent so far.
        pub fn clear(&self) {
            if let Ok(mut v) = self.0.lock() {
                v.clear();
            }
        }
    }
}

static GLOBAL: OnceLock<std::sync::Arc<Emitter>> = OnceLock::new();

/// The process-wide emitter, built from [`crate::config::global`] on first use.
pub(crate) fn global() -> std::sync::Arc<Emitter> {
    GLOBAL.get_or_init(|| std::sync::Arc::new(Emitter::from_config(crate::config::global()))).clone()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lambda_xray_wire::{EntityId, TraceId};

    /// The in-memory transport, also used by the invocation tests.
    pub(crate) type Capture = MemoryTransport;

    #[test]
    fn memory_transport_keeps_datagrams_in_wire_format() {
        let cap = Capture::default();
        Emitter::new(cap.clone()).emit(doc_with_children(0, 0));
        let raw = cap.datagrams();
        assert!(raw[0].starts_with(b"{\"format\":\"json\",\"version\":1}\n"));
        assert_eq!(cap.documents()[0]["name"], "parent");
    }

    #[test]
    fn daemon_address_forms() {
        assert_eq!(parse_daemon_address("127.0.0.1:2000"), Ok(SocketAddr::from(([127, 0, 0, 1], 2000))));
        assert_eq!(parse_daemon_address("tcp:127.0.0.1:2000 udp:127.0.0.2:2001"), Ok(SocketAddr::from(([127, 0, 0, 2], 2001))));
        assert_eq!(parse_daemon_address(" udp:127.0.0.2:2001 tcp:127.0.0.1:2000 "), Ok(SocketAddr::from(([127, 0, 0, 2], 2001))));
        for bad in ["", "nonsense", "udp:127.0.0.1:2000", "127.0.0.1:99999", "tcp:1.2.3.4:1 tcp:1.2.3.4:2"] {
            assert!(parse_daemon_address(bad).is_err(), "{bad}");
        }
    }

    fn doc_with_children(n: usize, meta_bytes: usize) -> Document {
        let mut parent = Document::start("parent", EntityId::random(), 1.0);
        parent.trace_id = Some(TraceId::new());
        parent.parent_id = Some(EntityId::random());
        parent.kind = Some("subsegment".into());
        parent.end_time = Some(2.0);
        for i in 0..n {
            let mut c = Document::start(&format!("child{i}"), EntityId::random(), 1.1);
            c.end_time = Some(1.2);
            let blob = serde_json::value::to_raw_value(&"x".repeat(meta_bytes)).unwrap_or_default();
            let _ = c.metadata.insert("app", "blob", blob);
            parent.subsegments.push(c);
        }
        parent
    }

    #[test]
    fn small_documents_go_out_whole() {
        let cap = Capture::default();
        let emitter = Emitter::new(cap.clone());
        emitter.emit(doc_with_children(3, 10));
        let docs = cap.documents();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["subsegments"].as_array().map(Vec::len), Some(3));
        assert_eq!(emitter.stats().datagrams_sent, 1);
    }

    #[test]
    fn oversized_documents_are_split_not_truncated() {
        let cap = Capture::default();
        let emitter = Emitter::new(cap.clone());
        let parent = doc_with_children(10, 20_000);
        let parent_id = parent.id;
        emitter.emit(parent);
        let sizes: Vec<usize> = cap.datagrams().iter().map(Vec::len).collect();
        assert!(sizes.iter().all(|&s| s <= MAX_DATAGRAM_BYTES), "{sizes:?}");
        let docs = cap.documents();
        // Every child arrives exactly once, embedded or on its own with the right parent.
        let mut names: Vec<String> = Vec::new();
        for d in &docs {
            if d["name"] == "parent" {
                for c in d["subsegments"].as_array().into_iter().flatten() {
                    names.push(c["name"].as_str().unwrap_or("").to_owned());
                }
            } else {
                assert_eq!(d["parent_id"], parent_id.to_string());
                assert_eq!(d["type"], "subsegment");
                names.push(d["name"].as_str().unwrap_or("").to_owned());
            }
        }
        names.sort();
        let mut want: Vec<String> = (0..10).map(|i| format!("child{i}")).collect();
        want.sort();
        assert_eq!(names, want);
        assert_eq!(docs.iter().filter(|d| d["name"] == "parent").count(), 1);
        assert_eq!(emitter.stats().documents_split, 1);
    }

    #[test]
    fn a_single_value_too_big_for_any_datagram_is_dropped_and_noted() {
        let cap = Capture::default();
        let emitter = Emitter::new(cap.clone());
        let mut d = doc_with_children(0, 0);
        let _ = d.metadata.insert("app", "huge", serde_json::value::to_raw_value(&"y".repeat(100_000)).unwrap_or_default());
        let _ = d.metadata.insert("app", "small", serde_json::value::to_raw_value(&1).unwrap_or_default());
        emitter.emit(d);
        let docs = cap.documents();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["metadata"]["app"]["small"], 1);
        assert!(docs[0]["metadata"]["app"].get("huge").is_none());
        let note = docs[0]["metadata"]["lambda_xray"]["removed_to_fit_64KiB"][0].as_str().unwrap_or("");
        assert!(note.contains("app.huge"), "{note}");
        assert_eq!(emitter.stats().values_dropped, 1);
    }

    #[test]
    fn the_end_mark_rides_on_the_document_only_when_both_fit() {
        let tree = || Finished::leaf(doc_with_children(0, 0));
        let plain = {
            let mut buf = Vec::new();
            buf.extend_from_slice(wire_header());
            assert!(crate::encode::write_tree(&tree(), &mut buf).is_ok());
            buf.len()
        };
        let field = ",\"invocation_done\":\"req-1\"".len();
        for (max, marked) in [(plain + field, true), (plain + field - 1, false), (plain, false)] {
            let cap = Capture::default();
            let emitter = Emitter::for_extension(cap.clone()).with_max_datagram(max);
            let sent = emitter.emit_tree_with(tree(), &mut Vec::new(), Some("req-1"));
            assert_eq!(sent, marked, "limit {max}");
            let datagrams = cap.datagrams();
            assert_eq!(datagrams.len(), 1, "limit {max}: one datagram either way");
            let header = datagrams[0].split(|&b| b == b'\n').next().unwrap_or_default();
            let header: serde_json::Value = serde_json::from_slice(header).unwrap_or_default();
            assert_eq!(header["invocation_done"].as_str(), marked.then_some("req-1"), "limit {max}");
            assert_eq!(header["format"], "json");
            assert!(datagrams[0].len() <= max);
            assert_eq!(cap.documents().len(), 1);
        }
    }

    #[test]
    fn extension_refusing_switches_to_the_fallback() -> io::Result<()> {
        // A bound-then-closed port refuses connected UDP sends.
        let closed = UdpSocket::bind("127.0.0.1:0")?;
        let closed_addr = closed.local_addr()?;
        drop(closed);
        let daemon = UdpSocket::bind("127.0.0.1:0")?;
        daemon.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let emitter = Emitter::new(UdpTransport::connect(closed_addr)?).with_fallback(UdpTransport::connect(daemon.local_addr()?)?);
        let mut buf = [0u8; 65536];
        let mut received = 0;
        for _ in 0..5 {
            emitter.emit(doc_with_children(0, 0));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        daemon.set_nonblocking(true)?;
        while daemon.recv(&mut buf).is_ok() {
            received += 1;
        }
        // The first send may vanish (the refusal is reported on the next one);
        // after that everything reaches the fallback.
        assert!(received >= 3, "received {received}");
        Ok(())
    }

    /// An extension stand-in: its UDP socket and the Unix one beside it.
    #[cfg(target_os = "linux")]
    fn extension_sockets() -> io::Result<(UdpSocket, std::os::unix::net::UnixDatagram)> {
        use std::os::linux::net::SocketAddrExt;
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let name = lambda_xray_wire::unix_intake_name(udp.local_addr()?);
        let unix = std::os::unix::net::UnixDatagram::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?)?;
        udp.set_nonblocking(true)?;
        unix.set_nonblocking(true)?;
        Ok((udp, unix))
    }

    /// Reads every datagram waiting on a non-blocking socket.
    fn drain_all(recv: impl Fn(&mut [u8]) -> io::Result<usize>) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        std::iter::from_fn(|| recv(&mut buf).ok().map(|n| buf[..n].to_vec())).collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_extension_gets_datagrams_over_its_unix_socket_and_over_udp_when_that_queue_is_full() -> io::Result<()> {
        let (udp, unix) = extension_sockets()?;
        let intake = ExtensionIntake::connect(udp.local_addr()?)?;
        assert!(intake.unix.is_some(), "the Unix socket beside the UDP one was not found");
        let emitter = Emitter::for_extension(intake);
        emitter.emit(doc_with_children(0, 0));
        assert_eq!(drain_all(|b| unix.recv(b)).len(), 1);
        assert!(drain_all(|b| udp.recv(b)).is_empty());

        // Nobody reads: the Unix queue fills (`net.unix.max_dgram_qlen`, a
        // few datagrams), then UDP takes the rest, and the end of the
        // invocation follows them there, never overtaking them.
        // (60: within the test's default UDP receive buffer.)
        for _ in 0..60 {
            emitter.emit(doc_with_children(0, 0));
        }
        emitter.send_invocation_done("req-1");
        let over_unix = drain_all(|b| unix.recv(b));
        let over_udp = drain_all(|b| udp.recv(b));
        assert_eq!(over_unix.len() + over_udp.len(), 61, "{} + {}", over_unix.len(), over_udp.len());
        assert!(!over_unix.is_empty() && over_unix.len() < 60, "{} over Unix", over_unix.len());
        assert!(over_udp.last().is_some_and(|d| d.starts_with(control_header())), "the end did not follow the documents over UDP");
        assert!(over_unix.iter().all(|d| d.starts_with(wire_header())));
        assert_eq!(emitter.stats().send_errors, 0);

        // After the end, back to the Unix socket.
        emitter.emit(doc_with_children(0, 0));
        assert_eq!(drain_all(|b| unix.recv(b)).len(), 1);
        assert!(drain_all(|b| udp.recv(b)).is_empty());
        Ok(())
    }

    #[test]
    fn an_extension_without_a_unix_socket_gets_udp() -> io::Result<()> {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        udp.set_nonblocking(true)?;
        let intake = ExtensionIntake::connect(udp.local_addr()?)?;
        assert!(intake.unix.is_none());
        Emitter::for_extension(intake).emit(doc_with_children(0, 0));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(drain_all(|b| udp.recv(b)).len(), 1);
        Ok(())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_extension_gone_from_its_unix_socket_switches_to_the_daemon() -> io::Result<()> {
        let (udp, unix) = extension_sockets()?;
        let daemon = UdpSocket::bind("127.0.0.1:0")?;
        daemon.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let emitter = Emitter::for_extension(ExtensionIntake::connect(udp.local_addr()?)?)
            .with_fallback(UdpTransport::connect(daemon.local_addr()?)?);
        drop((udp, unix));
        for _ in 0..3 {
            emitter.emit(doc_with_children(0, 0));
        }
        // A Unix socket refuses at once: not even the first datagram is lost.
        let mut buf = [0u8; 65536];
        for _ in 0..3 {
            daemon.recv(&mut buf)?;
        }
        assert!(!emitter.sends_to_extension());
        Ok(())
    }
}
