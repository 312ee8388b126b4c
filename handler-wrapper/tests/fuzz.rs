//! Property tests over what the library takes from outside: trace headers
//! (from the invocation, the environment, or a caller) and SQS messages'
//! `AWSTraceHeader`. Arbitrary text and mutations of valid headers: no panic,
//! and what parses formats back to itself.
//!
//! Cases per property: `LAMBDA_XRAY_FUZZ_CASES` (default 2,048; CI runs the
//! default, `scripts/fuzz.sh` a million).

use lambda_xray_tracing::{SamplingDecision, TraceHeader};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("LAMBDA_XRAY_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

const VALID: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1";

/// `VALID` with byte edits (position, op, byte), kept as text (lossy).
fn mutated(edits: &[(usize, u8, char)]) -> String {
    let mut out: Vec<char> = VALID.chars().collect();
    for &(at, op, c) in edits {
        let at = at % (out.len() + 1);
        match op % 4 {
            0 if at < out.len() => out[at] = c,
            1 => out.insert(at, c),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 => out.truncate(at),
            _ => {}
        }
    }
    out.into_iter().collect()
}

fn check(value: &str) -> Result<(), TestCaseError> {
    if let Ok(header) = TraceHeader::parse(value) {
        let text = header.to_string();
        prop_assert!(text.len() <= value.len(), "{text:?} from {value:?}");
        let again = TraceHeader::parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(again.to_string(), text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_headers(value in ".{0,200}") {
        check(&value)?;
    }

    #[test]
    fn header_shaped_text(value in "([A-Za-z]{1,8}=[ -:<-~]{0,40};? ?){0,6}") {
        check(&value)?;
    }

    #[test]
    fn mutated_headers(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), prop_oneof![Just(';'), Just('='), Just(' '), Just('-'), any::<char>()]), 0..6)) {
        check(&mutated(&edits))?;
    }

    #[test]
    fn oversized_headers(extra in 1usize..4096) {
        let value = format!("{VALID};Pad={}", "x".repeat(extra));
        // Within the 2 KiB limit it parses; past it, it is refused.
        prop_assert_eq!(TraceHeader::parse(&value).is_ok(), value.len() <= 2048);
    }
}

#[cfg(feature = "sqs")]
mod sqs {
    use super::*;
    use aws_lambda_events::event::sqs::SqsMessage;
    use lambda_xray_tracing::sqs::{TRACE_HEADER_ATTRIBUTE, is_message_sampled, message_trace_header};

    fn message(value: &str) -> SqsMessage {
        let mut msg = SqsMessage::default();
        msg.attributes.insert(TRACE_HEADER_ATTRIBUTE.to_owned(), value.to_owned());
        msg
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn aws_trace_header_attributes(value in ".{0,200}|Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=[01?x]{0,2}") {
            let msg = message(&value);
            let header = message_trace_header(&msg);
            prop_assert_eq!(header.as_ref().map(|h| h.to_string()), TraceHeader::parse(&value).ok().map(|h| h.to_string()));
            let sampled = header.is_some_and(|h| h.root().is_some() && h.sampled() == SamplingDecision::Sampled);
            prop_assert_eq!(is_message_sampled(&msg), sampled);
            // Sampled only with exactly `Sampled=1` (not `Sampled=10`, `1?`...).
            if is_message_sampled(&msg) {
                prop_assert!(value.split(';').any(|p| p.trim() == "Sampled=1"), "{value:?}");
            }
        }
    }
}
