//! The errors this crate returns.

use std::fmt;

/// What went wrong with a tracing call. Tracing errors never affect the
/// handler: every call that returns one has already done nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceError {
    /// Annotation keys must be 1-500 ASCII letters, digits or `_`.
    InvalidAnnotationKey(String),
    /// Metadata namespaces must be non-empty.
    InvalidMetadataNamespace(String),
    /// Namespaces starting with `AWS.` are reserved for AWS.
    ReservedMetadataNamespace(String),
    /// The metadata value could not be serialised to JSON.
    MetadataNotSerializable(String),
    /// There is no current subsegment: the call was made outside any
    /// invocation or subsegment (only returned when
    /// `AWS_XRAY_CONTEXT_MISSING=RUNTIME_ERROR`).
    ContextMissing,
    /// The current entity is the segment Lambda owns, which code cannot change:
    /// open a subsegment first.
    LambdaSegmentIsReadOnly,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::InvalidAnnotationKey(k) => {
                write!(f, "invalid annotation key {k:?}: use 1-500 ASCII letters, digits or '_'")
            }
            TraceError::InvalidMetadataNamespace(ns) => write!(f, "invalid metadata namespace {ns:?}"),
            TraceError::ReservedMetadataNamespace(ns) => {
                write!(f, "metadata namespace {ns:?} is reserved: namespaces starting with 'AWS.' belong to AWS")
            }
            TraceError::MetadataNotSerializable(e) => write!(f, "metadata value is not serialisable to JSON: {e}"),
            TraceError::ContextMissing => f.write_str("no X-Ray trace context: not inside a traced invocation or subsegment"),
            TraceError::LambdaSegmentIsReadOnly => {
                f.write_str("the current entity is the Lambda function segment, which cannot be changed: begin a subsegment first")
            }
        }
    }
}

impl std::error::Error for TraceError {}
