//! Per-operation `aws` fields: one table, read from the serialized request and
//! response, so it works for every generated `aws-sdk-*` client without
//! depending on any of them.
//!
//! Adding a service's fields is one row in [`FIELDS`]: the service id (as the
//! client's `Metadata` names it: `SQS`, `DynamoDB`, `S3`, `Lambda`, `SNS`...),
//! the operation (or `"*"` for all of the service's operations) and the fields,
//! each saying which message it comes from, where in it, how it is recorded and
//! under which `aws` key.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::document::{Aws, MAX_STRING_LEN, truncate};

/// Which message a field is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The request as it goes on the wire.
    Request,
    /// The response (successful calls only).
    Response,
}

/// Where in the message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Src {
    /// A top-level member of a JSON body (awsJson and restJson protocols).
    Json(&'static str),
    /// A parameter of a form-encoded body (awsQuery protocol) or of the URL's query string.
    Param(&'static str),
    /// An HTTP header.
    Header(&'static str),
    /// Segment `n` (0-based) of the request path, percent-decoded (restJson and restXml labels).
    PathSegment(usize),
    /// The text of the first `<name>` element of an XML body (restXml and awsQuery responses).
    Xml(&'static str),
    /// The S3 bucket: the virtual-host label before `.s3`, else the first path segment.
    S3Bucket,
    /// The S3 object key: the path after the bucket.
    S3Key,
}

/// How the value is recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// As it is (strings capped at 250 characters).
    Value,
    /// The number of elements of a list (a list that is absent from a successful response counts 0).
    Count,
    /// The keys of a map, as a list.
    Keys,
}

/// One field of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) side: Side,
    pub(crate) from: Src,
    pub(crate) shape: Shape,
    pub(crate) aws: &'static str,
}

const fn req(from: Src, aws: &'static str) -> Field {
    Field { side: Side::Request, from, shape: Shape::Value, aws }
}
const fn res(from: Src, aws: &'static str) -> Field {
    Field { side: Side::Response, from, shape: Shape::Value, aws }
}
const fn count(side: Side, from: Src, aws: &'static str) -> Field {
    Field { side, from, shape: Shape::Count, aws }
}
const fn keys(side: Side, from: Src, aws: &'static str) -> Field {
    Field { side, from, shape: Shape::Keys, aws }
}

use Side::{Request, Response};
use Src::{Header, Json, Param, PathSegment, S3Bucket, S3Key, Xml};

/// `(service id, operation or "*", fields)`. Both the operation's own row and
/// the service's `"*"` row apply.
pub(crate) static FIELDS: &[(&str, &str, &[Field])] = &[
    // SQS (awsJson1_0).
    ("SQS", "*", &[req(Json("QueueUrl"), "queue_url")]),
    ("SQS", "CreateQueue", &[req(Json("QueueName"), "queue_name"), res(Json("QueueUrl"), "queue_url")]),
    ("SQS", "GetQueueUrl", &[req(Json("QueueName"), "queue_name"), res(Json("QueueUrl"), "queue_url")]),
    (
        "SQS",
        "SendMessage",
        &[
            req(Json("DelaySeconds"), "delay_seconds"),
            keys(Request, Json("MessageAttributes"), "message_attribute_names"),
            res(Json("MessageId"), "message_id"),
        ],
    ),
    (
        "SQS",
        "SendMessageBatch",
        &[
            count(Request, Json("Entries"), "message_count"),
            count(Response, Json("Successful"), "successful_count"),
            count(Response, Json("Failed"), "failed_count"),
        ],
    ),
    (
        "SQS",
        "ReceiveMessage",
        &[
            req(Json("MaxNumberOfMessages"), "max_number_of_messages"),
            req(Json("VisibilityTimeout"), "visibility_timeout"),
            req(Json("WaitTimeSeconds"), "wait_time_seconds"),
            req(Json("AttributeNames"), "attribute_names"),
            req(Json("MessageAttributeNames"), "message_attribute_names"),
            count(Response, Json("Messages"), "message_count"),
        ],
    ),
    ("SQS", "DeleteMessageBatch", &[count(Request, Json("Entries"), "message_count")]),
    // DynamoDB (awsJson1_0).
    ("DynamoDB", "*", &[req(Json("TableName"), "table_name")]),
    ("DynamoDB", "BatchGetItem", &[keys(Request, Json("RequestItems"), "table_names")]),
    ("DynamoDB", "BatchWriteItem", &[keys(Request, Json("RequestItems"), "table_names")]),
    // S3 (restXml): bucket and key from the URL.
    ("S3", "*", &[req(S3Bucket, "bucket_name"), req(S3Key, "key")]),
    // Lambda (restJson1): /2015-03-31/functions/{FunctionName}/invocations.
    ("Lambda", "Invoke", &[req(PathSegment(2), "function_name"), req(Header("x-amz-invocation-type"), "invocation_type")]),
    ("Lambda", "InvokeAsync", &[req(PathSegment(2), "function_name")]),
    // SNS (awsQuery).
    ("SNS", "Publish", &[req(Param("TopicArn"), "topic_arn"), res(Xml("MessageId"), "message_id")]),
    ("SNS", "PublishBatch", &[req(Param("TopicArn"), "topic_arn")]),
];

/// The fields of one operation (none when the table has no row for it).
pub(crate) fn fields_for<'a>(service: &'a str, operation: &'a str) -> impl Iterator<Item = &'static Field> + 'a {
    FIELDS.iter().filter(move |(s, o, _)| s.eq_ignore_ascii_case(service) && (*o == "*" || *o == operation)).flat_map(|(_, _, f)| f.iter())
}

/// Whether the table has request (or response) fields for this operation.
pub(crate) fn has_fields(service: &str, operation: &str, side: Side) -> bool {
    FIELDS.iter().any(|(s, o, f)| s.eq_ignore_ascii_case(service) && (*o == "*" || *o == operation) && f.iter().any(|f| f.side == side))
}

/// A message as the table reads it: URL, headers and body.
pub(crate) struct Message<'a> {
    /// Full URI (`scheme://host/path?query`) or just `path?query`.
    pub(crate) uri: &'a str,
    /// Header lookup, case-insensitive.
    pub(crate) header: &'a dyn Fn(&str) -> Option<&'a str>,
    /// The body, when it is in memory.
    pub(crate) body: Option<&'a [u8]>,
}

/// The wanted top-level members of a JSON body, borrowed from it.
type JsonMembers<'a> = Vec<(&'static str, &'a RawValue)>;

/// Parses only the members named in `wanted` out of a JSON object: the others
/// are skipped without being built (message bodies can be large).
struct Pick<'w>(&'w [&'static str]);

impl<'de> serde::de::DeserializeSeed<'de> for Pick<'_> {
    type Value = JsonMembers<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Pick<'_> {
    type Value = JsonMembers<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(key) = map.next_key_seed(Key(self.0))? {
            match key {
                Some(name) => out.push((name, map.next_value::<&RawValue>()?)),
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A map key, matched against the wanted names without allocating.
struct Key<'w>(&'w [&'static str]);

impl<'de> serde::de::DeserializeSeed<'de> for Key<'_> {
    type Value = Option<&'static str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for Key<'_> {
    type Value = Option<&'static str>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|w| **w == v).copied())
    }
}

fn pick<'a>(body: &'a [u8], wanted: &[&'static str]) -> Option<JsonMembers<'a>> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(body);
    Pick(wanted).deserialize(&mut de).ok()
}

/// Records the fields of `side` for `(service, operation)` read from `msg` into `aws`.
pub(crate) fn record(service: &str, operation: &str, side: Side, msg: &Message<'_>, aws: &mut Aws) {
    let mut json: Option<Option<JsonMembers<'_>>> = None;
    for field in fields_for(service, operation).filter(|f| f.side == side) {
        let value = match field.from {
            Src::Json(name) => {
                let members = json.get_or_insert_with(|| {
                    let wanted: Vec<&'static str> = fields_for(service, operation)
                        .filter(|f| f.side == side)
                        .filter_map(|f| if let Src::Json(n) = f.from { Some(n) } else { None })
                        .collect();
                    msg.body.and_then(|b| pick(b, &wanted))
                });
                match members {
                    Some(m) => shape_json(m.iter().find(|(k, _)| *k == name).map(|(_, v)| *v), field.shape, side),
                    None => None,
                }
            }
            Src::Param(name) => query_param(msg.uri, name)
                .or_else(|| msg.body.and_then(|b| std::str::from_utf8(b).ok()).and_then(|b| form_param(b, name)))
                .map(|v| string_value(&v)),
            Src::Header(name) => (msg.header)(name).map(string_value),
            Src::PathSegment(n) => {
                path(msg.uri).split('/').filter(|s| !s.is_empty()).nth(n).map(|s| string_value(&percent_decode(s, false)))
            }
            Src::Xml(name) => {
                msg.body.and_then(|b| std::str::from_utf8(b).ok()).and_then(|b| xml_element(b, name)).map(|v| string_value(&v))
            }
            Src::S3Bucket => s3_bucket_and_key(msg.uri).0.map(|b| string_value(&b)),
            Src::S3Key => s3_bucket_and_key(msg.uri).1.map(|k| string_value(&k)),
        };
        if let Some(v) = value {
            set_field(aws, field.aws, v);
        }
    }
}

fn shape_json(raw: Option<&RawValue>, shape: Shape, side: Side) -> Option<Value> {
    match (shape, raw) {
        (Shape::Value, Some(raw)) => serde_json::from_str::<Value>(raw.get()).ok().map(cap_value),
        (Shape::Count, Some(raw)) => serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok().map(|v| Value::from(v.len())),
        // Smithy JSON leaves out empty lists.
        (Shape::Count, None) if side == Side::Response => Some(Value::from(0)),
        (Shape::Keys, Some(raw)) => serde_json::from_str::<HashMap<Cow<'_, str>, &RawValue>>(raw.get())
            .ok()
            .map(|m| {
                let mut k: Vec<String> = m.into_keys().map(|k| truncate(&k, MAX_STRING_LEN).to_owned()).collect();
                k.sort();
                k
            })
            .map(Value::from),
        _ => None,
    }
}

/// Caps the strings in a value at 250 characters.
fn cap_value(v: Value) -> Value {
    match v {
        Value::String(s) if s.len() > MAX_STRING_LEN => Value::String(truncate(&s, MAX_STRING_LEN).to_owned()),
        Value::Array(a) => Value::Array(a.into_iter().map(cap_value).collect()),
        other => other,
    }
}

fn string_value(s: &str) -> Value {
    Value::String(truncate(s, MAX_STRING_LEN).to_owned())
}

/// Puts a field in its typed slot when the document has one, else in `extra`.
pub(crate) fn set_field(aws: &mut Aws, name: &str, value: Value) {
    let as_string = |v: &Value| v.as_str().map(str::to_owned);
    match name {
        "queue_url" => aws.queue_url = as_string(&value),
        "table_name" => aws.table_name = as_string(&value),
        "table_names" => aws.table_names = value.as_array().map(|a| a.iter().filter_map(as_string).collect()),
        _ => {
            aws.extra.insert(name.to_owned(), value);
        }
    }
}

/// The authority of a full URI (`None` for `path?query`).
pub(crate) fn authority(uri: &str) -> Option<&str> {
    let rest = uri.split_once("://")?.1;
    Some(rest.split(['/', '?']).next().unwrap_or(rest))
}

/// The path of a URI, without query.
pub(crate) fn path(uri: &str) -> &str {
    let rest = match uri.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or(""),
        None => uri,
    };
    rest.split('?').next().unwrap_or(rest)
}

fn query_param(uri: &str, name: &str) -> Option<String> {
    form_param(uri.split_once('?')?.1, name)
}

/// A parameter of an `application/x-www-form-urlencoded` string.
pub(crate) fn form_param(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true) == name).then(|| percent_decode(v, true).into_owned())
    })
}

/// Percent-decodes `s` (and `+` as space in forms); invalid escapes are kept as they are.
pub(crate) fn percent_decode(s: &str, form: bool) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || (form && b == b'+')) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if form => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The unescaped text of the first `<name>` element of an XML document.
pub(crate) fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find("</")? + start;
    let text = &xml[start..end];
    Some(text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&"))
}

/// S3 bucket and key from the request URL: virtual-hosted (`bucket.s3.region.amazonaws.com/key`)
/// or path-style (`host/bucket/key`).
fn s3_bucket_and_key(uri: &str) -> (Option<String>, Option<String>) {
    let p = path(uri).trim_start_matches('/');
    let host = authority(uri).unwrap_or("");
    let virtual_bucket =
        [".s3.", ".s3-", ".s3-accesspoint."].iter().find_map(|m| host.find(m)).map(|i| &host[..i]).filter(|b| !b.is_empty());
    let (bucket, key) = match virtual_bucket {
        Some(b) => (Some(b.to_owned()), p),
        None => {
            let (b, k) = p.split_once('/').unwrap_or((p, ""));
            ((!b.is_empty()).then(|| percent_decode(b, false).into_owned()), k)
        }
    };
    let key = (!key.is_empty()).then(|| percent_decode(key, false).into_owned());
    (bucket, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(uri: &'a str, body: Option<&'a [u8]>, header: &'a dyn Fn(&str) -> Option<&'a str>) -> Message<'a> {
        Message { uri, header, body }
    }

    #[test]
    fn sqs_send_message_request_and_response() {
        let none = |_: &str| None;
        let mut aws = Aws::default();
        let body = br#"{"QueueUrl":"http://127.0.0.1:1/123/q","MessageBody":"hi","DelaySeconds":3,"MessageAttributes":{"b":{},"a":{}}}"#;
        record("SQS", "SendMessage", Side::Request, &msg("/", Some(body), &none), &mut aws);
        record("SQS", "SendMessage", Side::Response, &msg("/", Some(br#"{"MessageId":"m-1","MD5OfMessageBody":"x"}"#), &none), &mut aws);
        assert_eq!(aws.queue_url.as_deref(), Some("http://127.0.0.1:1/123/q"));
        assert_eq!(aws.extra["delay_seconds"], 3);
        assert_eq!(aws.extra["message_attribute_names"], serde_json::json!(["a", "b"]));
        assert_eq!(aws.extra["message_id"], "m-1");
        assert!(!aws.extra.contains_key("MessageBody"));
    }

    #[test]
    fn counts_and_absent_lists() {
        let none = |_: &str| None;
        let mut aws = Aws::default();
        record("SQS", "SendMessageBatch", Side::Request, &msg("/", Some(br#"{"QueueUrl":"u","Entries":[{},{},{}]}"#), &none), &mut aws);
        record("SQS", "SendMessageBatch", Side::Response, &msg("/", Some(br#"{"Successful":[{},{}],"Failed":[{}]}"#), &none), &mut aws);
        assert_eq!(
            (aws.extra["message_count"].clone(), aws.extra["successful_count"].clone(), aws.extra["failed_count"].clone()),
            (3.into(), 2.into(), 1.into())
        );
        let mut aws = Aws::default();
        record("SQS", "ReceiveMessage", Side::Response, &msg("/", Some(b"{}"), &none), &mut aws);
        assert_eq!(aws.extra["message_count"], 0);
    }

    #[test]
    fn other_protocols() {
        let hdr = |k: &str| (k == "x-amz-invocation-type").then_some("Event");
        let mut aws = Aws::default();
        record(
            "Lambda",
            "Invoke",
            Side::Request,
            &msg("https://lambda.us-east-1.amazonaws.com/2015-03-31/functions/my%3Afn/invocations", None, &hdr),
            &mut aws,
        );
        assert_eq!(aws.extra["function_name"], "my:fn");
        assert_eq!(aws.extra["invocation_type"], "Event");

        let none = |_: &str| None;
        let mut aws = Aws::default();
        let form = b"Action=Publish&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A1%3At&Message=a+b";
        record("SNS", "Publish", Side::Request, &msg("https://sns.us-east-1.amazonaws.com/", Some(form), &none), &mut aws);
        assert_eq!(aws.extra["topic_arn"], "arn:aws:sns:us-east-1:1:t");

        let mut aws = Aws::default();
        record(
            "S3",
            "GetObject",
            Side::Request,
            &msg("https://bkt.s3.us-east-1.amazonaws.com/a/b%20c.txt?x-id=GetObject", None, &none),
            &mut aws,
        );
        assert_eq!((aws.extra["bucket_name"].as_str(), aws.extra["key"].as_str()), (Some("bkt"), Some("a/b c.txt")));
        let mut aws = Aws::default();
        record("S3", "PutObject", Side::Request, &msg("http://127.0.0.1:9000/bkt/k", None, &none), &mut aws);
        assert_eq!((aws.extra["bucket_name"].as_str(), aws.extra["key"].as_str()), (Some("bkt"), Some("k")));

        let mut aws = Aws::default();
        record("DynamoDB", "BatchWriteItem", Side::Request, &msg("/", Some(br#"{"RequestItems":{"t2":[],"t1":[]}}"#), &none), &mut aws);
        assert_eq!(aws.table_names, Some(vec!["t1".to_owned(), "t2".to_owned()]));
    }

    #[test]
    fn json_picking_takes_top_level_members_only() {
        let body = br#"{"X":{"QueueUrl":"nested"},"A\u0042":1,"QueueUrl":"u","MessageBody":"big"}"#;
        let got = pick(body, &["QueueUrl", "AB"]).unwrap();
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (*k, v.get())).collect();
        assert_eq!(got, [("AB", "1"), ("QueueUrl", "\"u\"")]);
        assert!(pick(b"[1]", &["QueueUrl"]).is_none());
        assert!(pick(b"{\"QueueUrl\":", &["QueueUrl"]).is_none());
    }

    #[test]
    fn decoding_never_panics() {
        for s in ["%", "%4", "%zz", "a%2", "%%41", "+%41%"] {
            let _ = percent_decode(s, true);
        }
        assert_eq!(percent_decode("%41b%", false), "Ab%");
        assert_eq!(xml_element("<E><Code>Throttling</Code><Message>a &amp; b</Message></E>", "Message").as_deref(), Some("a & b"));
    }
}
