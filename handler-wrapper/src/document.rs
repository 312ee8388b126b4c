//! Segment and subsegment documents, as X-Ray's segment-document schema defines them.
//!
//! One [`Document`] type covers both: a subsegment sent on its own carries
//! `type: "subsegment"`, `trace_id` and `parent_id`; one embedded in its parent's
//! `subsegments` carries neither. Everything is serialised with serde.

use compact_str::CompactString;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::error::TraceError;
use lambda_xray_wire::{EntityId, TraceId};

/// Longest entity name X-Ray accepts.
pub const MAX_NAME_LEN: usize = 200;
/// Longest value for the schema's other string fields (http, user, aws...).
pub const MAX_STRING_LEN: usize = 250;
/// Longest annotation key the schema allows.
pub const MAX_ANNOTATION_KEY_LEN: usize = 500;
/// Longest annotation string value the schema allows.
pub const MAX_ANNOTATION_VALUE_LEN: usize = 1000;
/// Longest exception message kept.
pub const MAX_MESSAGE_LEN: usize = 1000;

/// A segment or subsegment document.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Document {
    /// Logical name: sanitised to X-Ray's allowed characters, at most 200 chars.
    pub name: String,
    /// 16 hex digits.
    pub id: EntityId,
    /// Set on documents sent on their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<TraceId>,
    /// Set on subsegments sent on their own: the id of the parent entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<EntityId>,
    /// `"subsegment"` on subsegments sent on their own.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Epoch seconds, microsecond resolution.
    pub start_time: f64,
    /// Epoch seconds; absent while in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<f64>,
    /// `true` while the entity is still open (then `end_time` is absent).
    #[serde(default, skip_serializing_if = "is_false")]
    pub in_progress: bool,
    /// `aws` for AWS SDK calls, `remote` for other downstream calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Client error (4xx).
    #[serde(default, skip_serializing_if = "is_false")]
    pub error: bool,
    /// Throttled (429).
    #[serde(default, skip_serializing_if = "is_false")]
    pub throttle: bool,
    /// Server error (5xx) or unhandled failure.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fault: bool,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Indexed key/value pairs, usable in filter expressions.
    #[serde(default, skip_serializing_if = "Annotations::is_empty")]
    pub annotations: Annotations,
    /// Namespaced, unindexed JSON.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// HTTP request and response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Box<Http>>,
    /// AWS call details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<Box<Aws>>,
    /// Ids of subsegments of the same parent that completed before this one started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub precursor_ids: Vec<EntityId>,
    /// Segment field: the traced service's type (e.g. `AWS::Lambda::Function`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Segment field: the user who made the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Segment field: the ARN of the traced resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_arn: Option<String>,
    /// Segment field: service version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
    /// Embedded child subsegments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsegments: Vec<Document>,
}

/// A finished subtree as the library keeps it until it is sent: its root
/// boxed and its finished children beside it rather than in
/// `doc.subsegments`, so that ending a subsegment moves two pointers, not a
/// whole `Document`, and a parent's children never reallocate as one block
/// of documents.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The root. Its own `subsegments` (normally empty) come first.
    pub(crate) doc: Box<Document>,
    /// Finished children, after `doc.subsegments`.
    pub(crate) children: Vec<Finished>,
}

impl Finished {
    /// A document with no children kept beside it.
    pub(crate) fn leaf(doc: Document) -> Self {
        Finished { doc: Box::new(doc), children: Vec::new() }
    }

    /// The one document this stands for (children moved into `subsegments`).
    pub(crate) fn into_document(self) -> Document {
        let mut doc = *self.doc;
        doc.subsegments.extend(self.children.into_iter().map(Finished::into_document));
        doc
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Document {
    /// An open (not yet ended) entity named `name` (sanitised) started now.
    pub fn start(name: &str, id: EntityId, start_time: f64) -> Self {
        Document { name: sanitize_name(name), id, start_time, ..Default::default() }
    }

    /// Empties the document for reuse (see `pool.rs`), keeping only its name's
    /// buffer. Field by field: an empty field costs a check, where building a
    /// whole default document and dropping the old one cost several times more.
    pub(crate) fn reset_keeping_name(&mut self) {
        // Exhaustive on purpose: a new field must be reset here too.
        let Document {
            name,
            id,
            trace_id,
            parent_id,
            kind,
            start_time,
            end_time,
            in_progress,
            namespace,
            error,
            throttle,
            fault,
            cause,
            annotations,
            metadata,
            http,
            aws,
            precursor_ids,
            origin,
            user,
            resource_arn,
            service,
            subsegments,
        } = self;
        name.clear();
        *id = EntityId::default();
        *trace_id = None;
        *parent_id = None;
        *kind = None;
        *start_time = 0.0;
        *end_time = None;
        *in_progress = false;
        *namespace = None;
        *error = false;
        *throttle = false;
        *fault = false;
        *cause = None;
        if !annotations.is_empty() || annotations.0.spilled() {
            *annotations = Annotations::default();
        }
        if !metadata.is_empty() || metadata.0.spilled() {
            *metadata = Metadata::default();
        }
        *http = None;
        *aws = None;
        if precursor_ids.capacity() > 0 {
            *precursor_ids = Vec::new();
        }
        *origin = None;
        *user = None;
        *resource_arn = None;
        *service = None;
        if subsegments.capacity() > 0 {
            *subsegments = Vec::new();
        }
    }

    /// Marks the entity `fault` with `cause` (replacing any cause): the one
    /// place a failure is recorded.
    pub(crate) fn fail(&mut self, cause: CauseDetails) {
        self.fault = true;
        self.cause = Some(Cause::Details(cause));
    }

    /// Marks the entity `fault`, with `cause()` unless it has a cause already
    /// (a more precise one recorded earlier wins).
    pub(crate) fn fail_unless_caused(&mut self, cause: impl FnOnce() -> CauseDetails) {
        self.fault = true;
        if self.cause.is_none() {
            self.cause = Some(Cause::Details(cause()));
        }
    }

    /// Sets `http.response.content_length`.
    #[cfg(any(feature = "lambda-http", feature = "reqwest", feature = "hyper-client"))]
    pub(crate) fn set_content_length(&mut self, length: u64) {
        let http = self.http.get_or_insert_with(Default::default);
        http.response.get_or_insert_with(Default::default).content_length = Some(length);
    }

    /// Sets error/throttle/fault and `http.response.status` from an HTTP status:
    /// 429 → throttle + error, other 4xx → error, 5xx → fault.
    pub fn apply_http_status(&mut self, status: u16) {
        match status {
            429 => {
                self.throttle = true;
                self.error = true;
            }
            400..=499 => self.error = true,
            500..=599 => self.fault = true,
            _ => {}
        }
        let http = self.http.get_or_insert_with(Default::default);
        http.response.get_or_insert_with(Default::default).status = Some(status);
    }
}

/// Service version (segment field).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Service {
    /// Version string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `http` block.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Http {
    /// Outgoing or incoming request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HttpRequest>,
    /// Response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponse>,
}

/// `http.request`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct HttpRequest {
    /// GET, POST...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Full URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// User agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// Whether `client_ip` came from X-Forwarded-For.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_forwarded_for: Option<bool>,
    /// Whether the downstream call is itself traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traced: Option<bool>,
}

/// `http.response`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct HttpResponse {
    /// HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Body length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u64>,
}

/// `aws` block of a subsegment for an AWS call.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Aws {
    /// PascalCase operation name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Request id returned by the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Attempts minus one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// SQS queue URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_url: Option<String>,
    /// DynamoDB table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_name: Option<String>,
    /// DynamoDB tables of a batch operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_names: Option<Vec<String>>,
    /// Resources of the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_names: Option<Vec<String>>,
    /// S3 `x-amz-id-2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_2: Option<String>,
    /// Per-operation parameters (message_id, bucket_name, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `cause`: either full details or the id of an exception recorded on a descendant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Cause {
    /// Id of an exception recorded elsewhere in the same trace.
    ExceptionId(EntityId),
    /// Full details.
    Details(CauseDetails),
}

/// Full `cause` object.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct CauseDetails {
    /// Working directory of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// Source paths involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The exceptions, outermost first.
    #[serde(default)]
    pub exceptions: Vec<Exception>,
}

impl CauseDetails {
    /// Rough serialised size: what the exceptions carry, plus framing.
    pub(crate) fn estimated_bytes(&self) -> usize {
        let paths: usize = self.paths.iter().map(|p| p.len() + 3).sum();
        let exceptions: usize = self
            .exceptions
            .iter()
            .map(|e| {
                let text = e.message.as_ref().map_or(0, String::len) + e.kind.as_ref().map_or(0, String::len);
                let stack: usize =
                    e.stack.iter().map(|f| 40 + f.path.as_ref().map_or(0, String::len) + f.label.as_ref().map_or(0, String::len)).sum();
                100 + text + stack
            })
            .sum();
        40 + self.working_directory.as_ref().map_or(0, String::len) + paths + exceptions
    }
}

/// One exception of a `cause`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Exception {
    /// 16 hex digits.
    pub id: EntityId,
    /// Message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Type name.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Raised by a downstream service.
    #[serde(default, skip_serializing_if = "is_false")]
    pub remote: bool,
    /// Frames left out of `stack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<u32>,
    /// Exceptions left out after this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u32>,
    /// Id of the exception that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<EntityId>,
    /// Stack frames, innermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<StackFrame>,
}

/// One stack frame.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct StackFrame {
    /// Source file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Line number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Function or label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// An annotation value: string, number or bool only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnnotationValue {
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Floating point (non-finite values are stored as strings, JSON has no NaN).
    Float(f64),
    /// String, at most 1000 characters.
    String(String),
}

macro_rules! annotation_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for AnnotationValue {
            fn from(v: $t) -> Self { AnnotationValue::Int(v as i64) }
        }
    )*};
}
annotation_from_int!(i8, i16, i32, i64, u8, u16, u32, isize);

impl From<u64> for AnnotationValue {
    fn from(v: u64) -> Self {
        i64::try_from(v).map(AnnotationValue::Int).unwrap_or(AnnotationValue::Float(v as f64))
    }
}
impl From<usize> for AnnotationValue {
    fn from(v: usize) -> Self {
        AnnotationValue::from(v as u64)
    }
}
impl From<f64> for AnnotationValue {
    fn from(v: f64) -> Self {
        if v.is_finite() { AnnotationValue::Float(v) } else { AnnotationValue::String(v.to_string()) }
    }
}
impl From<f32> for AnnotationValue {
    fn from(v: f32) -> Self {
        AnnotationValue::from(v as f64)
    }
}
impl From<bool> for AnnotationValue {
    fn from(v: bool) -> Self {
        AnnotationValue::Bool(v)
    }
}
impl From<&str> for AnnotationValue {
    fn from(v: &str) -> Self {
        AnnotationValue::String(truncate(v, MAX_ANNOTATION_VALUE_LEN).to_owned())
    }
}
impl From<String> for AnnotationValue {
    fn from(mut v: String) -> Self {
        let keep = truncate(&v, MAX_ANNOTATION_VALUE_LEN).len();
        v.truncate(keep);
        AnnotationValue::String(v)
    }
}
impl From<&String> for AnnotationValue {
    fn from(v: &String) -> Self {
        AnnotationValue::from(v.as_str())
    }
}

/// Annotations in insertion order; a repeated key replaces the earlier value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations(smallvec::SmallVec<[(CompactString, AnnotationValue); 2]>);

impl Annotations {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Number of annotations.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Looks one up.
    pub fn get(&self, key: &str) -> Option<&AnnotationValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// Iterates in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &AnnotationValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// Validates the key and adds or replaces the value.
    pub fn insert(&mut self, key: &str, value: AnnotationValue) -> Result<(), TraceError> {
        validate_annotation_key(key)?;
        self.insert_valid(key, value);
        Ok(())
    }

    /// [`Annotations::insert`] for a key the caller has already validated
    /// (`&str`, or a key already made: stored only when new).
    pub(crate) fn insert_valid(&mut self, key: impl AsRef<str> + Into<CompactString>, value: AnnotationValue) {
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| k == key.as_ref()) {
            slot.1 = value;
        } else {
            // Most subsegments have one or two (the handler's: `ColdStart`,
            // `Service`): stored inline, without an allocation; more move to
            // the heap.
            self.0.push((key.into(), value));
        }
    }
}

impl Serialize for Annotations {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Annotations {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Annotations;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Annotations, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, AnnotationValue>()? {
                    out.push((CompactString::from(k), v));
                }
                Ok(Annotations(smallvec::SmallVec::from_vec(out)))
            }
        }
        d.deserialize_map(V)
    }
}

/// Metadata: namespace → key → JSON, in insertion order. Values are kept as
/// already-serialised JSON so their size is known exactly and the caller's
/// value is not held.
#[derive(Debug, Clone, Default)]
pub struct Metadata(smallvec::SmallVec<[(CompactString, MetadataEntries); 1]>);

/// One metadata value: key and serialised JSON. Namespaces and keys up to 24
/// bytes are stored inline, and one namespace with one value (the handler's
/// response) needs no allocation but the value's.
type MetadataEntry = (CompactString, Box<RawValue>);
type MetadataEntries = smallvec::SmallVec<[MetadataEntry; 1]>;

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|((a, av), (b, bv))| {
                a == b && av.len() == bv.len() && av.iter().zip(bv).all(|((ak, ar), (bk, br))| ak == bk && ar.get() == br.get())
            })
    }
}

/// The namespace `put_metadata` uses when none is given.
pub const DEFAULT_METADATA_NAMESPACE: &str = "default";

impl Metadata {
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Looks up a value's JSON text.
    pub fn get(&self, namespace: &str, key: &str) -> Option<&str> {
        self.0.iter().find(|(ns, _)| ns == namespace).and_then(|(_, entries)| entries.iter().find(|(k, _)| k == key)).map(|(_, v)| v.get())
    }
    /// Iterates `(namespace, key, json)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.0.iter().flat_map(|(ns, e)| e.iter().map(move |(k, v)| (ns.as_str(), k.as_str(), v.get())))
    }
    /// Total bytes of the serialised values.
    pub fn value_bytes(&self) -> usize {
        self.iter().map(|(ns, k, v)| ns.len() + k.len() + v.len() + 8).sum()
    }
    /// Validates the namespace and adds or replaces one value.
    pub fn insert(&mut self, namespace: &str, key: &str, value: Box<RawValue>) -> Result<(), TraceError> {
        validate_metadata_namespace(namespace)?;
        self.insert_valid(namespace, key, value);
        Ok(())
    }

    /// [`Metadata::insert`] for a namespace the caller has already validated
    /// (`&str`s, or `String`s to move in: each allocated only when new).
    pub(crate) fn insert_valid(
        &mut self,
        namespace: impl AsRef<str> + Into<CompactString>,
        key: impl AsRef<str> + Into<CompactString>,
        value: Box<RawValue>,
    ) {
        let idx = match self.0.iter().position(|(ns, _)| ns == namespace.as_ref()) {
            Some(i) => i,
            None => {
                self.0.push((namespace.into(), MetadataEntries::new()));
                self.0.len() - 1
            }
        };
        let entries = &mut self.0[idx].1;
        if let Some(slot) = entries.iter_mut().find(|(k, _)| k == key.as_ref()) {
            slot.1 = value;
        } else {
            entries.push((key.into(), value));
        }
    }
    /// Removes the largest value and returns its namespace, key and size, so an
    /// oversized document can be shrunk (see `emitter`).
    pub(crate) fn remove_largest(&mut self) -> Option<(String, String, usize)> {
        let (ni, ki, size) = self
            .0
            .iter()
            .enumerate()
            .flat_map(|(ni, (_, e))| e.iter().enumerate().map(move |(ki, (_, v))| (ni, ki, v.get().len())))
            .max_by_key(|&(_, _, size)| size)?;
        let (key, _) = self.0[ni].1.remove(ki);
        let ns = self.0[ni].0.to_string();
        if self.0[ni].1.is_empty() {
            self.0.remove(ni);
        }
        Some((ns, key.into(), size))
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Entries<'a>(&'a [MetadataEntry]);
        impl Serialize for Entries<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    map.serialize_entry(k.as_str(), v)?;
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (ns, entries) in &self.0 {
            map.serialize_entry(ns.as_str(), &Entries(entries))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let mut out = smallvec::SmallVec::new();
        for (ns, v) in map {
            let mut entries = MetadataEntries::new();
            if let serde_json::Value::Object(obj) = v {
                for (k, v) in obj {
                    let raw = serde_json::value::to_raw_value(&v).map_err(serde::de::Error::custom)?;
                    entries.push((k.into(), raw));
                }
            }
            out.push((ns.into(), entries));
        }
        Ok(Metadata(out))
    }
}

/// Whether `c` may appear in an entity name: Unicode letters, digits and
/// whitespace, plus `_ . : / % & # = + \ - @`.
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || matches!(c, '_' | '.' | ':' | '/' | '%' | '&' | '#' | '=' | '+' | '\\' | '-' | '@')
}

/// The ASCII bytes [`is_name_char`] allows (non-ASCII bytes are `false`).
const ASCII_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
            || matches!(c, b'_' | b'.' | b':' | b'/' | b'%' | b'&' | b'#' | b'=' | b'+' | b'\\' | b'-' | b'@');
        b += 1;
    }
    table
};

/// Makes `name` a valid entity name: disallowed characters are removed (as the
/// Python SDK does), the result is capped at 200 characters, and an empty
/// result becomes `"unnamed"`.
pub(crate) fn sanitize_name(name: &str) -> String {
    if is_plain_name(name) {
        return name.to_owned();
    }
    sanitize_unusual(name)
}

/// [`sanitize_name`] into `out` (replacing what it held, keeping its buffer).
pub(crate) fn sanitize_name_into(name: &str, out: &mut String) {
    out.clear();
    if is_plain_name(name) {
        out.push_str(name);
    } else {
        out.push_str(&sanitize_unusual(name));
    }
}

/// The usual name: short ASCII, allowed as is, not blank.
fn is_plain_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| ASCII_NAME_BYTES[b as usize])
        && name.bytes().any(|b| !b.is_ascii_whitespace() && b != 0x0b)
}

fn sanitize_unusual(name: &str) -> String {
    let mut out: String = if name.chars().all(is_name_char) {
        truncate(name, MAX_NAME_LEN).to_owned()
    } else {
        name.chars().filter(|&c| is_name_char(c)).take(MAX_NAME_LEN).collect()
    };
    if out.trim().is_empty() {
        out.clear();
        out.push_str("unnamed");
    }
    out
}

/// `s` cut to at most `max` characters (on a char boundary).
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Annotation keys must be 1-500 ASCII letters, digits or `_`: only such keys
/// work in filter expressions and the schema rejects the rest.
pub(crate) fn validate_annotation_key(key: &str) -> Result<(), TraceError> {
    // One table lookup per byte: this runs for every annotation.
    const ALLOWED: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = (b as u8).is_ascii_alphanumeric() || b == b'_' as usize;
            b += 1;
        }
        table
    };
    if key.is_empty() || key.len() > MAX_ANNOTATION_KEY_LEN || !key.bytes().all(|b| ALLOWED[b as usize]) {
        return Err(TraceError::InvalidAnnotationKey(truncate(key, 64).to_owned()));
    }
    Ok(())
}

/// Metadata namespaces must be non-empty and must not start with `AWS.`.
pub(crate) fn validate_metadata_namespace(ns: &str) -> Result<(), TraceError> {
    if ns.is_empty() {
        return Err(TraceError::InvalidMetadataNamespace(String::new()));
    }
    if ns.starts_with("AWS.") {
        return Err(TraceError::ReservedMetadataNamespace(truncate(ns, 64).to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_document_is_a_new_one_with_an_empty_name() {
        let mut doc = Document::start("full", EntityId::from_u64(7), 1_700_000_000.5);
        doc.trace_id = Some(TraceId::new());
        doc.parent_id = Some(EntityId::from_u64(8));
        doc.kind = Some("subsegment".into());
        doc.end_time = Some(1_700_000_001.0);
        doc.in_progress = true;
        doc.namespace = Some("aws".into());
        (doc.error, doc.throttle, doc.fault) = (true, true, true);
        doc.cause = Some(Cause::ExceptionId(EntityId::from_u64(9)));
        for i in 0..5 {
            doc.annotations.insert_valid(format!("k{i}").as_str(), i.into());
            let raw = serde_json::value::to_raw_value(&i).unwrap_or_else(|_| serde_json::value::to_raw_value(&0).unwrap_or_default());
            doc.metadata.insert_valid(format!("ns{i}").as_str(), "key", raw);
        }
        doc.http = Some(Box::default());
        doc.aws = Some(Box::default());
        doc.precursor_ids = vec![EntityId::from_u64(1)];
        doc.origin = Some("AWS::Lambda::Function".into());
        doc.user = Some("u".into());
        doc.resource_arn = Some("arn".into());
        doc.service = Some(Service { version: Some("1".into()) });
        doc.subsegments = vec![Document::start("child", EntityId::from_u64(2), 1.0)];
        let capacity = doc.name.capacity();
        doc.reset_keeping_name();
        assert_eq!(doc, Document::default());
        assert_eq!(doc.name.capacity(), capacity, "the name's buffer is kept");
    }

    #[test]
    fn names_are_sanitised_and_capped() {
        for b in 0..=255u8 {
            assert_eq!(ASCII_NAME_BYTES[b as usize], b.is_ascii() && is_name_char(b as char), "{b:#x}");
        }
        assert_eq!(sanitize_name(" \t\x0b\x0c\r\n"), "unnamed");
        assert_eq!(sanitize_name("## handler"), "## handler");
        assert_eq!(sanitize_name("get(item)!?;*$~^<>"), "getitem");
        assert_eq!(sanitize_name("Ünïcødé 名前 1.2"), "Ünïcødé 名前 1.2");
        assert_eq!(sanitize_name("???"), "unnamed");
        assert_eq!(sanitize_name(&"a".repeat(500)).len(), 200);
        assert_eq!(sanitize_name(&"é".repeat(300)).chars().count(), 200);
    }

    #[test]
    fn annotation_keys_are_validated() {
        assert!(validate_annotation_key("order_id").is_ok());
        assert!(validate_annotation_key("Count9").is_ok());
        for bad in ["", "has space", "dash-key", "dot.key", "ünï", &"k".repeat(501)] {
            assert!(matches!(validate_annotation_key(bad), Err(TraceError::InvalidAnnotationKey(_))), "{bad}");
        }
    }

    #[test]
    fn aws_namespace_is_reserved() {
        assert!(validate_metadata_namespace("app").is_ok());
        assert!(matches!(validate_metadata_namespace("AWS.Lambda"), Err(TraceError::ReservedMetadataNamespace(_))));
        assert!(validate_metadata_namespace("").is_err());
    }

    #[test]
    fn http_status_sets_the_right_flag() {
        let flags = |s| {
            let mut d = Document::default();
            d.apply_http_status(s);
            (d.error, d.throttle, d.fault)
        };
        assert_eq!(flags(200), (false, false, false));
        assert_eq!(flags(404), (true, false, false));
        assert_eq!(flags(429), (true, true, false));
        assert_eq!(flags(503), (false, false, true));
    }

    #[test]
    fn documents_round_trip_through_json() -> Result<(), Box<dyn std::error::Error>> {
        let mut d = Document::start("work", EntityId::from_u64(0xabc), 1.5);
        d.end_time = Some(2.0);
        d.annotations.insert("n", 3.into())?;
        d.annotations.insert("s", "x".into())?;
        d.annotations.insert("b", true.into())?;
        d.metadata.insert("app", "k", serde_json::value::to_raw_value(&serde_json::json!({"a": [1, 2]}))?)?;
        d.apply_http_status(500);
        let json = serde_json::to_string(&d)?;
        assert_eq!(
            json,
            r#"{"name":"work","id":"0000000000000abc","start_time":1.5,"end_time":2.0,"fault":true,"annotations":{"n":3,"s":"x","b":true},"metadata":{"app":{"k":{"a":[1,2]}}},"http":{"response":{"status":500}}}"#
        );
        let back: Document = serde_json::from_str(&json)?;
        assert_eq!(back, d);
        Ok(())
    }

    #[test]
    fn golden_python_documents_parse() -> Result<(), Box<dyn std::error::Error>> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/raw");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir)? {
            let bytes = std::fs::read(entry?.path())?;
            let text = std::str::from_utf8(&bytes)?;
            let (_, body) = text.split_once('\n').ok_or("no header line")?;
            let doc: Document = serde_json::from_str(body)?;
            assert!(doc.trace_id.is_some());
            seen += 1;
        }
        assert_eq!(seen, 7);
        Ok(())
    }
}
