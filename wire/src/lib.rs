//! The wire protocol shared by `lambda-xray-tracing` (the library in the
//! function) and `lambda-xray-extension`: one strict implementation of what
//! crosses the loopback socket and the Lambda APIs.
//!
//! - [`TraceHeader`]: the `X-Amzn-Trace-Id` value (`Root`, `Parent`,
//!   `Sampled`, other keys), parsed strictly and formatted back;
//! - [`TraceId`], [`EntityId`]: X-Ray's ids (new ones with feature `random`);
//! - datagrams: the daemon's framing ([`DOCUMENT_HEADER`], [`frame`],
//!   [`MAX_DATAGRAM_BYTES`]), the function's [`ControlMessage`], and
//!   [`classify`], which tells the three kinds of datagram apart;
//! - [`daemon_udp_part`]: the UDP address in an `AWS_XRAY_DAEMON_ADDRESS`
//!   value; [`DEFAULT_EXTENSION_MARKER`]: where the extension says where it
//!   listens; [`unix_intake_name`]: its Unix socket beside the UDP one.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod datagram;
mod header;
mod id;

pub use datagram::{
    CONTROL_FORMAT, CONTROL_HEADER, ControlMessage, DEFAULT_DAEMON_ADDRESS, DEFAULT_EXTENSION_MARKER, DOCUMENT_HEADER, Datagram,
    MAX_DATAGRAM_BYTES, MAX_REQUEST_ID, Rejection, classify, daemon_udp_part, frame, unix_intake_name,
};
pub use header::{HeaderError, MAX_HEADER_LEN, SamplingDecision, TraceHeader};
pub use id::{EntityId, InvalidId, TraceId};
