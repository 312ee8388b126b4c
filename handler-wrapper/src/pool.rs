//! Recycled documents: once a finished subtree is sent, its documents' boxes
//! (and their names' buffers) go to a small per-thread pool, and the next
//! subsegments begun on that thread take them from there. In steady state a
//! subsegment then costs no allocation for its document or its name, which
//! was most of the library's allocator traffic per invocation.
//!
//! The pool holds at most [`MAX_POOLED`] documents per thread (tens of KiB),
//! each reset to empty: nothing of a sent document stays but the capacity of
//! its name.

// The boxes are what is reused: a pooled document goes back into an open
// node (and then a `Finished`) as the same allocation.
#![allow(clippy::vec_box)]

use std::cell::RefCell;

use crate::document::{Document, Finished, sanitize_name, sanitize_name_into};
use lambda_xray_wire::EntityId;

/// Documents kept per thread, at most.
const MAX_POOLED: usize = 64;
/// Emptied lists of children kept per thread, at most, and the largest kept.
const MAX_POOLED_LISTS: usize = 8;
const MAX_LIST_CAPACITY: usize = 128;

/// A thread's spare documents and children lists.
struct Pool {
    docs: Vec<Box<Document>>,
    lists: Vec<Vec<Finished>>,
}

thread_local! {
    static FREE: RefCell<Pool> = const { RefCell::new(Pool { docs: Vec::new(), lists: Vec::new() }) };
}

/// An empty list for a parent's finished children, with room for eight at
/// least: a recycled one when the thread has it.
pub(crate) fn children_list() -> Vec<Finished> {
    let pooled = FREE.try_with(|f| f.try_borrow_mut().ok().and_then(|mut f| f.lists.pop())).ok().flatten();
    pooled.unwrap_or_else(|| Vec::with_capacity(8))
}

/// An open document named `name` (sanitised), from the pool when it has one.
pub(crate) fn start(name: &str, id: EntityId, start_time: f64) -> Box<Document> {
    let pooled = FREE.try_with(|f| f.try_borrow_mut().ok().and_then(|mut f| f.docs.pop())).ok().flatten();
    match pooled {
        Some(mut doc) => {
            sanitize_name_into(name, &mut doc.name);
            doc.id = id;
            doc.start_time = start_time;
            doc
        }
        None => Box::new(Document { name: sanitize_name(name), id, start_time, ..Default::default() }),
    }
}

/// Returns a sent tree's documents to the pool (dropping what does not fit).
pub(crate) fn recycle(tree: Finished) {
    let _ = FREE.try_with(|f| {
        if let Ok(mut free) = f.try_borrow_mut() {
            give(tree, &mut free);
        }
    });
}

fn give(tree: Finished, free: &mut Pool) {
    let Finished { mut doc, mut children } = tree;
    if !children.is_empty() {
        for child in children.drain(..) {
            give(child, free);
        }
        if free.lists.len() < MAX_POOLED_LISTS && children.capacity() <= MAX_LIST_CAPACITY {
            free.lists.push(children);
        }
    }
    if free.docs.len() < MAX_POOLED {
        if free.docs.capacity() == 0 {
            free.docs.reserve_exact(MAX_POOLED);
        }
        doc.reset_keeping_name();
        free.docs.push(doc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_document_starts_empty_with_its_new_name() {
        let id = EntityId::random();
        let mut doc = start("first", id, 1.0);
        doc.annotations.insert_valid("k", 1.into());
        doc.fault = true;
        doc.namespace = Some("remote".into());
        recycle(Finished { doc, children: vec![Finished { doc: start("child", id, 2.0), children: Vec::new() }] });
        let again = start("second name!", id, 3.0);
        let fresh = Document { name: "second name".into(), id, start_time: 3.0, ..Default::default() };
        assert_eq!(*again, fresh);
        // A sent parent's list of children comes back empty, its room kept.
        let children = (0..10).map(|i| Finished { doc: start(&format!("c{i}"), id, 5.0), children: Vec::new() }).collect::<Vec<_>>();
        recycle(Finished { doc: start("parent", id, 5.0), children });
        let list = children_list();
        assert!(list.is_empty() && list.capacity() >= 10, "capacity {}", list.capacity());
        let other = start("third", id, 4.0);
        assert_eq!(other.name, "third");
        assert!(other.annotations.is_empty() && !other.fault && other.namespace.is_none());
    }
}
