//! One traced invocation: the subsegments recorded under the segment Lambda owns.
//!
//! Open subsegments live in a slab behind one mutex. A subsegment that ends is
//! kept with its parent's finished children (so a finished subtree goes out as
//! one document), or sent as its own document when its parent is the Lambda
//! segment or has already ended. Documents stay boxed from begin to send, so
//! none is copied on the way. An open parent whose completed children pass
//! a count or size threshold streams them out as their own documents.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::clock::now_seconds;
use crate::document::{Document, Finished};
use crate::emitter::Emitter;
use lambda_xray_wire::{EntityId, TraceId};
use lambda_xray_wire::{SamplingDecision, TraceHeader};

/// A handle on an open node; `gen` guards against a reused slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeRef {
    idx: u32,
    generation: u32,
}

/// A change to a document queued while the document is checked out.
type Edit = Box<dyn FnOnce(&mut Document) + Send>;

struct OpenNode {
    /// `None` while checked out by [`Invocation::update`]: user code is
    /// editing it outside the lock.
    doc: Option<Box<Document>>,
    id: EntityId,
    /// Library edits made while the document was checked out, applied (in
    /// order) when it comes back.
    queued: Vec<Edit>,
    /// Finished children, in the order they ended.
    children: Vec<Finished>,
    /// `None`: child of the Lambda segment.
    parent: Option<(NodeRef, EntityId)>,
    completed_children: usize,
    completed_bytes: usize,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    node: Option<OpenNode>,
}

/// Inline room for the subsegments open at once in most invocations (the
/// handler's and a nested one or two): no allocation for them.
#[derive(Default)]
struct Tree {
    slots: smallvec::SmallVec<[Slot; 4]>,
    free: smallvec::SmallVec<[u32; 4]>,
}

impl OpenNode {
    /// Applies a library edit now, or queues it while user code has the
    /// document checked out.
    fn apply(&mut self, f: impl FnOnce(&mut Document) + Send + 'static) {
        match self.doc.as_deref_mut() {
            Some(doc) => f(doc),
            None => self.queued.push(Box::new(f)),
        }
    }
}

impl Tree {
    fn get_mut(&mut self, r: NodeRef) -> Option<&mut OpenNode> {
        self.slots.get_mut(r.idx as usize).filter(|s| s.generation == r.generation).and_then(|s| s.node.as_mut())
    }

    fn insert(&mut self, node: OpenNode) -> NodeRef {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        slot.node = Some(node);
        NodeRef { idx, generation: slot.generation }
    }

    fn remove(&mut self, r: NodeRef) -> Option<OpenNode> {
        let slot = self.slots.get_mut(r.idx as usize).filter(|s| s.generation == r.generation)?;
        let node = slot.node.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(r.idx);
        Some(node)
    }
}

/// Rough serialised size of a finished document without its children; only
/// used to decide when to stream (the emitter measures exactly).
fn estimate_bytes(doc: &Document) -> usize {
    let annotations: usize = doc
        .annotations
        .iter()
        .map(|(k, v)| {
            k.len()
                + 8
                + match v {
                    crate::document::AnnotationValue::String(s) => s.len() + 2,
                    _ => 20,
                }
        })
        .sum();
    let extras = if doc.http.is_some() || doc.aws.is_some() { 400 } else { 0 };
    let cause = match &doc.cause {
        Some(crate::document::Cause::Details(details)) => details.estimated_bytes(),
        Some(crate::document::Cause::ExceptionId(_)) => 40,
        None => 0,
    };
    120 + doc.name.len() + annotations + doc.metadata.value_bytes() + extras + cause
}

/// Stream thresholds for open subsegments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamLimits {
    pub(crate) max_children: usize,
    pub(crate) max_bytes: usize,
}

/// State of one sampled invocation.
pub(crate) struct Invocation {
    pub(crate) trace_id: TraceId,
    /// Id of the Lambda-owned segment (the header's `Parent`).
    pub(crate) segment_id: EntityId,
    pub(crate) header: TraceHeader,
    emitter: Arc<Emitter>,
    limits: StreamLimits,
    /// The invocation's `AWS_XRAY_NOOP_ID` (for its unsampled branches).
    pub(crate) noop_ids: bool,
    tree: Mutex<Tree>,
    /// The armed deadline flush, if any.
    deadline: Mutex<Option<crate::deadline::Key>>,
}

impl Invocation {
    pub(crate) fn new(
        header: TraceHeader,
        trace_id: TraceId,
        segment_id: EntityId,
        emitter: Arc<Emitter>,
        limits: StreamLimits,
        noop_ids: bool,
    ) -> Arc<Self> {
        Arc::new(Invocation { trace_id, segment_id, header, emitter, limits, noop_ids, tree: Mutex::default(), deadline: Mutex::new(None) })
    }

    fn tree(&self) -> MutexGuard<'_, Tree> {
        // A panic while holding the lock cannot leave the tree inconsistent in a
        // way that matters more than losing the trace, so keep going.
        self.tree.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The header to send downstream from `from` (the Lambda segment when `None`).
    pub(crate) fn downstream_header(&self, from: Option<EntityId>) -> TraceHeader {
        self.header.with_parent(from.unwrap_or(self.segment_id), SamplingDecision::Sampled)
    }

    /// Opens a subsegment under `parent` (the Lambda segment when `None`).
    pub(crate) fn begin(&self, parent: Option<NodeRef>, name: &str) -> (NodeRef, EntityId) {
        let id = EntityId::random();
        let doc = crate::pool::start(name, id, now_seconds());
        let mut tree = self.tree();
        let parent = parent.and_then(|p| tree.get_mut(p).map(|n| (p, n.id)));
        let r = tree.insert(OpenNode {
            doc: Some(doc),
            id,
            queued: Vec::new(),
            children: Vec::new(),
            parent,
            completed_children: 0,
            completed_bytes: 0,
        });
        (r, id)
    }

    /// Applies a library edit to an open subsegment (nothing if it has
    /// ended). `f` runs under the lock, so it must not run user code (no
    /// `Display`, `Debug` or `Serialize` of user values: do those first). If
    /// user code has the document checked out ([`Self::update`]), `f` is
    /// queued and applied when it comes back.
    pub(crate) fn edit(&self, r: NodeRef, f: impl FnOnce(&mut Document) + Send + 'static) {
        if let Some(node) = self.tree().get_mut(r) {
            node.apply(f);
        }
    }

    /// Runs user code `f` on an open subsegment's document, outside the lock:
    /// the document is checked out meanwhile, so `f` may call the library
    /// (annotations, subsegments, logging through the `tracing` bridge)
    /// without deadlocking; edits of this subsegment made meanwhile are
    /// applied after `f`. Returns `false` without running `f` if the
    /// subsegment has ended or is already checked out (an `update` inside its
    /// own `update`).
    pub(crate) fn update(&self, r: NodeRef, f: impl FnOnce(&mut Document)) -> bool {
        let Some(doc) = self.tree().get_mut(r).and_then(|n| n.doc.take()) else { return false };
        /// Puts the document back, also if `f` panics.
        struct CheckIn<'a> {
            inv: &'a Invocation,
            r: NodeRef,
            doc: Option<Box<Document>>,
        }
        impl Drop for CheckIn<'_> {
            fn drop(&mut self) {
                let Some(mut doc) = self.doc.take() else { return };
                let mut tree = self.inv.tree();
                if let Some(node) = tree.get_mut(self.r) {
                    for edit in node.queued.drain(..) {
                        edit(&mut doc);
                    }
                    node.doc = Some(doc);
                }
            }
        }
        let mut checked_out = CheckIn { inv: self, r, doc: Some(doc) };
        if let Some(doc) = checked_out.doc.as_deref_mut() {
            f(doc);
        }
        true
    }

    /// Marks every subsegment still open `fault`, with `cause` unless it has
    /// one (the handler panicked: what it left open will end later, when the
    /// panic is no longer visible).
    pub(crate) fn fault_open(&self, cause: &crate::document::CauseDetails) {
        let mut tree = self.tree();
        for node in tree.slots.iter_mut().filter_map(|s| s.node.as_mut()) {
            let cause = cause.clone();
            node.apply(move |d| d.fail_unless_caused(|| cause));
        }
    }

    /// Ends a subsegment: hands it to its parent, or sends it.
    pub(crate) fn end(&self, r: NodeRef) {
        let end_time = now_seconds();
        // The subtree to send when this was a top-level subsegment, and the
        // children its parent streams out when past a threshold.
        let mut standalone = None;
        let mut streamed = Vec::new();
        {
            let mut tree = self.tree();
            let Some(mut node) = tree.remove(r) else { return };
            // Checked out: only while its own `update` runs, which borrows the
            // handle that ends it, so this cannot happen; if it did, the
            // document is with that code and is not sent.
            let Some(mut doc) = node.doc.take() else { return };
            for edit in node.queued.drain(..) {
                edit(&mut doc);
            }
            doc.end_time = Some(end_time);
            let bytes = estimate_bytes(&doc) + node.completed_bytes;
            let limits = self.limits;
            match node.parent.and_then(|(p, pid)| tree.get_mut(p).map(|n| (n, pid))) {
                Some((parent, _)) => {
                    // Room for a handful at once instead of growing 1, 4, 8...,
                    // from the thread's pool when it has a list.
                    if parent.children.capacity() == 0 {
                        parent.children = crate::pool::children_list();
                    }
                    parent.children.push(Finished { doc, children: node.children });
                    parent.completed_children += 1;
                    parent.completed_bytes += bytes;
                    if parent.completed_children > limits.max_children || parent.completed_bytes > limits.max_bytes {
                        self.stream_completed(parent, &mut streamed);
                    }
                }
                None => {
                    let pid = node.parent.map(|(_, id)| id).unwrap_or(self.segment_id);
                    self.make_standalone(&mut doc, pid);
                    standalone = Some(Finished { doc, children: node.children });
                }
            }
        }
        // Serialise and send outside the lock.
        for tree in streamed.into_iter().chain(standalone) {
            self.emitter.emit_tree(tree);
        }
    }

    /// Moves `node`'s completed children to `out`, as documents of their own.
    fn stream_completed(&self, node: &mut OpenNode, out: &mut Vec<Finished>) {
        let pid = node.id;
        node.completed_children = 0;
        node.completed_bytes = 0;
        for mut child in node.children.drain(..) {
            self.make_standalone(&mut child.doc, pid);
            out.push(child);
        }
    }

    fn make_standalone(&self, doc: &mut Document, parent_id: EntityId) {
        doc.trace_id = Some(self.trace_id);
        doc.parent_id = Some(parent_id);
        doc.kind = Some("subsegment".to_owned());
    }

    /// Sends everything recorded so far without waiting for it to end: completed
    /// subsegments as their own documents, open ones as `in_progress`. Used
    /// shortly before the deadline, so a function that times out still shows
    /// its work. Open subsegments stay open and are sent again when they end.
    pub(crate) fn flush_in_progress(&self) {
        let mut outgoing: Vec<Finished> = Vec::new();
        {
            let mut tree = self.tree();
            let segment_id = self.segment_id;
            for slot in tree.slots.iter_mut() {
                let Some(node) = slot.node.as_mut() else { continue };
                self.stream_completed(node, &mut outgoing);
                // Checked out by user code right now: sent when it ends.
                let Some(doc) = node.doc.as_deref() else { continue };
                let mut snapshot = Box::new(doc.clone());
                snapshot.in_progress = true;
                self.make_standalone(&mut snapshot, node.parent.map(|(_, id)| id).unwrap_or(segment_id));
                outgoing.push(Finished { doc: snapshot, children: Vec::new() });
            }
        }
        for tree in outgoing {
            self.emitter.emit_tree(tree);
        }
    }

    /// Arms the deadline flush: `margin` before `deadline`, flush what is
    /// there (on the process's deadline thread, see `deadline.rs`).
    pub(crate) fn arm_deadline(self: &Arc<Self>, deadline: SystemTime, margin: Duration) {
        let Some(watcher) = crate::deadline::watcher() else { return };
        let at = deadline.checked_sub(margin).unwrap_or(deadline);
        let key = watcher.arm(at, Arc::downgrade(self));
        let mut slot = self.deadline.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = slot.replace(key) {
            watcher.disarm(previous);
        }
    }

    /// The handler has returned: the deadline flush is no longer needed.
    pub(crate) fn disarm_deadline(&self) {
        let key = self.deadline.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let (Some(key), Some(watcher)) = (key, crate::deadline::watcher()) {
            watcher.disarm(key);
        }
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        self.disarm_deadline();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emitter::tests::Capture;

    fn invocation(limits: StreamLimits) -> (Arc<Invocation>, Capture) {
        let cap = Capture::default();
        let header = TraceHeader::parse("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1").expect("valid");
        let inv = Invocation::new(
            header.clone(),
            header.root().cloned().expect("root"),
            header.parent().expect("parent"),
            Arc::new(Emitter::new(cap.clone())),
            limits,
            true,
        );
        (inv, cap)
    }

    const WIDE: StreamLimits = StreamLimits { max_children: 100, max_bytes: 60 * 1024 };

    #[test]
    fn a_closed_subtree_goes_out_as_one_document() {
        let (inv, cap) = invocation(WIDE);
        let (outer, outer_id) = inv.begin(None, "outer");
        let (inner, _) = inv.begin(Some(outer), "inner");
        inv.end(inner);
        assert!(cap.documents().is_empty(), "nothing is sent while the parent is open");
        inv.end(outer);
        let docs = cap.documents();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["id"], outer_id.to_string());
        assert_eq!(docs[0]["parent_id"], "53995c3f42cd8ad8");
        assert_eq!(docs[0]["trace_id"], "1-5759e988-bd862e3fe1be46a994272793");
        assert_eq!(docs[0]["type"], "subsegment");
        assert_eq!(docs[0]["subsegments"][0]["name"], "inner");
        assert!(docs[0]["subsegments"][0].get("trace_id").is_none());
    }

    #[test]
    fn many_children_are_streamed_past_the_threshold() {
        let (inv, cap) = invocation(StreamLimits { max_children: 20, max_bytes: usize::MAX });
        let (outer, outer_id) = inv.begin(None, "outer");
        for i in 0..45 {
            let (c, _) = inv.begin(Some(outer), &format!("c{i}"));
            inv.end(c);
        }
        // Two batches of 21 went out while the parent was open.
        let docs = cap.documents();
        assert_eq!(docs.len(), 42);
        assert!(docs.iter().all(|d| d["parent_id"] == outer_id.to_string()));
        inv.end(outer);
        let docs = cap.documents();
        assert_eq!(docs.len(), 43);
        assert_eq!(docs[42]["subsegments"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn big_causes_count_towards_the_stream_threshold() {
        let (inv, cap) = invocation(StreamLimits { max_children: 100, max_bytes: 10_000 });
        let (outer, _) = inv.begin(None, "outer");
        for i in 0..10 {
            let (c, _) = inv.begin(Some(outer), &format!("c{i}"));
            let cause = crate::cause::cause_from_message("Big", &"m".repeat(1000), None);
            inv.edit(c, move |d| d.fail(cause));
            inv.end(c);
        }
        // Each child carries over 1 KB of cause: past 10,000 bytes the
        // completed ones go out while the parent is open (counted at a flat
        // 400 bytes per cause, 10 children never got there).
        let streamed = cap.documents();
        assert!((7..=9).contains(&streamed.len()), "{}", streamed.len());
        assert!(streamed.iter().all(|d| d["fault"] == true && d["type"] == "subsegment"));
        inv.end(outer);
        let docs = cap.documents();
        assert_eq!(docs.len(), streamed.len() + 1);
        let embedded = docs.last().and_then(|d| d["subsegments"].as_array()).map_or(0, Vec::len);
        assert_eq!(streamed.len() + embedded, 10);
    }

    #[test]
    fn a_child_outliving_its_parent_keeps_the_parent_id() {
        let (inv, cap) = invocation(WIDE);
        let (outer, outer_id) = inv.begin(None, "outer");
        let (late, _) = inv.begin(Some(outer), "late");
        inv.end(outer);
        inv.end(late);
        let docs = cap.documents();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["name"], "late");
        assert_eq!(docs[1]["parent_id"], outer_id.to_string());
    }

    #[test]
    fn deadline_flush_sends_completed_and_in_progress() {
        let (inv, cap) = invocation(WIDE);
        let (outer, outer_id) = inv.begin(None, "## handler");
        let (done, _) = inv.begin(Some(outer), "done");
        inv.end(done);
        let (_running, _) = inv.begin(Some(outer), "running");
        inv.flush_in_progress();
        let docs = cap.documents();
        let by_name = |n: &str| docs.iter().find(|d| d["name"] == n).cloned().unwrap_or_default();
        assert_eq!(by_name("done")["parent_id"], outer_id.to_string());
        assert!(by_name("done")["end_time"].is_number());
        assert_eq!(by_name("## handler")["in_progress"], true);
        assert!(by_name("## handler").get("end_time").is_none());
        assert_eq!(by_name("running")["in_progress"], true);
        assert_eq!(by_name("running")["parent_id"], outer_id.to_string());
    }

    /// Waits up to 10 s for `cond`.
    fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < end {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        cond()
    }

    #[test]
    fn the_deadline_thread_flushes_armed_invocations_and_skips_disarmed_ones() {
        let margin = Duration::from_millis(100);
        // One far off, so the thread sleeps towards it; then nearer ones that
        // must wake it; one of them disarmed.
        let (far, far_cap) = invocation(WIDE);
        let _far_open = far.begin(None, "far");
        far.arm_deadline(SystemTime::now() + Duration::from_secs(3600), margin);
        let (near, near_cap) = invocation(WIDE);
        let (_open, _) = near.begin(None, "## handler");
        near.arm_deadline(SystemTime::now() + margin + Duration::from_millis(150), margin);
        let (gone, gone_cap) = invocation(WIDE);
        let _gone_open = gone.begin(None, "## handler");
        gone.arm_deadline(SystemTime::now() + margin + Duration::from_millis(50), margin);
        gone.disarm_deadline();
        // Already past the flush time: flushed at once.
        let (late, late_cap) = invocation(WIDE);
        let _late_open = late.begin(None, "late");
        late.arm_deadline(SystemTime::now() + margin / 2, margin);

        assert!(eventually(|| !near_cap.documents().is_empty()), "the near deadline was not flushed");
        assert!(eventually(|| !late_cap.documents().is_empty()), "the past deadline was not flushed");
        let docs = near_cap.documents();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["name"], "## handler");
        assert_eq!(docs[0]["in_progress"], true);
        // `gone` was due before `near`: had it not been disarmed, it would be there.
        assert!(gone_cap.documents().is_empty());
        assert!(far_cap.documents().is_empty());
        far.disarm_deadline();
    }
}
