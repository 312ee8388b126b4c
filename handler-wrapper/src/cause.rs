//! Turning Rust errors, failures and panics into an X-Ray `cause`.

use std::panic::Location;

use crate::document::{CauseDetails, Exception, MAX_MESSAGE_LEN, StackFrame, truncate};
use lambda_xray_wire::EntityId;

/// At most this many errors of a chain are recorded; the rest are counted in `skipped`.
const MAX_CHAIN: usize = 10;
/// Errors of a `source()` chain looked at, at most: past it the chain is
/// taken to be cyclic and `skipped` counts up to here.
const MAX_WALK: usize = 1024;

/// Builds `cause` details from an error and its `source()` chain: one exception
/// per error, outermost first, each linked to the next by `cause`.
pub(crate) fn cause_from_error(
    err: &(dyn std::error::Error + 'static),
    type_name: Option<&str>,
    at: Option<&Location<'_>>,
) -> CauseDetails {
    let mut exceptions: Vec<Exception> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut skipped = 0u32;
    // A `source()` chain can be cyclic (or absurdly long): walk a bounded part.
    let mut walked = 0usize;
    while let Some(e) = current {
        walked += 1;
        if walked > MAX_WALK {
            break;
        }
        if exceptions.len() == MAX_CHAIN {
            skipped += 1;
        } else {
            let kind = if exceptions.is_empty() { type_name.map(short_type_name) } else { None };
            exceptions.push(Exception {
                id: EntityId::random(),
                message: Some(truncate(&e.to_string(), MAX_MESSAGE_LEN).to_owned()),
                kind: kind.or_else(|| type_from_debug(e)),
                remote: false,
                truncated: None,
                skipped: None,
                cause: None,
                stack: Vec::new(),
            });
        }
        current = e.source();
    }
    for i in 1..exceptions.len() {
        exceptions[i - 1].cause = Some(exceptions[i].id);
    }
    if let Some(last) = exceptions.last_mut().filter(|_| skipped > 0) {
        last.skipped = Some(skipped);
    }
    if let (Some(first), Some(at)) = (exceptions.first_mut(), at) {
        first.stack.push(StackFrame { path: Some(at.file().to_owned()), line: Some(at.line()), label: None });
    }
    CauseDetails { working_directory: working_directory(), paths: Vec::new(), exceptions }
}

/// A cause from a plain message (panics, errors that are not `std::error::Error`).
pub(crate) fn cause_from_message(kind: &str, message: &str, at: Option<(&str, u32)>) -> CauseDetails {
    CauseDetails {
        working_directory: working_directory(),
        paths: Vec::new(),
        exceptions: vec![Exception {
            id: EntityId::random(),
            message: Some(truncate(message, MAX_MESSAGE_LEN).to_owned()),
            kind: Some(kind.to_owned()),
            remote: false,
            truncated: None,
            skipped: None,
            cause: None,
            stack: at
                .map(|(file, line)| vec![StackFrame { path: Some(file.to_owned()), line: Some(line), label: None }])
                .unwrap_or_default(),
        }],
    }
}

fn working_directory() -> Option<String> {
    std::env::current_dir().ok().map(|p| p.to_string_lossy().into_owned())
}

/// `my_crate::errors::NotFound<T>` → `NotFound<T>`: the console shows it whole.
pub(crate) fn short_type_name(full: &str) -> String {
    let base = full.split('<').next().unwrap_or(full);
    let start = base.rfind("::").map(|i| i + 2).unwrap_or(0);
    full[start..].to_owned()
}

/// Rust has no runtime type names for `dyn Error`; derived `Debug` output
/// starts with the type name (`ParseIntError { kind: .. }`), so use that when
/// it looks like one.
fn type_from_debug(e: &dyn std::error::Error) -> Option<String> {
    let dbg = format!("{e:?}");
    let ident: String = dbg.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (ident.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && ident.len() < 100).then_some(ident)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Outer(std::num::ParseIntError);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("could not read the order count")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_chain_becomes_linked_exceptions() {
        let inner = "x".parse::<i32>().expect_err("not a number");
        let err = Outer(inner);
        let cause = cause_from_error(&err, Some(std::any::type_name::<Outer>()), Some(Location::caller()));
        assert_eq!(cause.exceptions.len(), 2);
        let (a, b) = (&cause.exceptions[0], &cause.exceptions[1]);
        assert_eq!(a.kind.as_deref(), Some("Outer"));
        assert_eq!(a.message.as_deref(), Some("could not read the order count"));
        assert_eq!(a.cause, Some(b.id));
        assert_eq!(b.kind.as_deref(), Some("ParseIntError"));
        assert_eq!(b.cause, None);
        assert_eq!(a.stack[0].path.as_deref(), Some(file!()));
    }

    #[test]
    fn short_type_names() {
        assert_eq!(short_type_name("a::b::NotFound<c::D>"), "NotFound<c::D>");
        assert_eq!(short_type_name("Plain"), "Plain");
    }
}
