//! Sending an invocation's last datagram after its response.
//!
//! Under [`crate::run`] the handler's response is posted to the Runtime API
//! before the invocation's final document (the handler subsegment's tree,
//! which carries the end-of-invocation mark) is encoded and sent: the
//! caller gets the response without waiting for tracing, and the datagram
//! wakes the extension when the function is about to wait for its next
//! event anyway. The subsegments' times are unchanged (they end when the
//! handler returns); only the encoding and the send move.
//!
//! How: the outermost `Runtime` layer ([`DeferredSendLayer`]) makes a stash
//! current on the thread for each poll of the invocation's future. While
//! an invocation ends (its request id is being marked, see
//! `emitter::with_invocation_done`), a tree that would carry the mark, and
//! the control datagram that stands in for it, go to the stash instead of
//! the socket. When the future completes (the Runtime API has taken the
//! response), or is dropped, the stash is sent in order. Without the layer
//! (an [`XRayLayer`](crate::XRayLayer) used directly) everything is sent
//! at once, as before. The extension calls `next` only after the mark, and
//! the runtime asks for its next event only after this future completes,
//! so nothing is left behind at the freeze.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tower::{Layer, Service};

use crate::document::Finished;
use crate::emitter::Emitter;

/// What an ending invocation left for after its response.
pub(crate) enum Deferred {
    /// A tree, and the mark it is to carry.
    Tree(Arc<Emitter>, Finished, Option<String>),
    /// The end-of-invocation control datagram, for an invocation no document carried it for.
    Done(Arc<Emitter>, String),
}

type Stash = smallvec::SmallVec<[Deferred; 1]>;

thread_local! {
    /// The stash of the invocation being polled on this thread, under [`DeferredSendLayer`].
    static STASH: RefCell<Option<Stash>> = const { RefCell::new(None) };
}

/// Puts `item` in the current stash; gives it back when there is none
/// (then it is to be sent now).
pub(crate) fn defer(item: Deferred) -> Option<Deferred> {
    let mut item = Some(item);
    let _ = STASH.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut()
            && let Some(stash) = s.as_mut()
            && let Some(item) = item.take()
        {
            stash.push(item);
        }
    });
    item
}

/// Sends one deferred item now.
pub(crate) fn send(item: Deferred) {
    match item {
        Deferred::Tree(emitter, tree, mark) => {
            if !emitter.emit_tree_marked(tree, mark.as_deref())
                && let Some(request_id) = mark
            {
                emitter.send_invocation_done(&request_id);
            }
        }
        Deferred::Done(emitter, request_id) => emitter.send_invocation_done(&request_id),
    }
}

/// The outermost `lambda_runtime` layer that [`crate::run`] adds: see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeferredSendLayer;

impl<S> Layer<S> for DeferredSendLayer {
    type Service = DeferredSend<S>;
    fn layer(&self, inner: S) -> DeferredSend<S> {
        DeferredSend { inner }
    }
}

/// The service [`DeferredSendLayer`] makes.
#[derive(Debug, Clone)]
pub(crate) struct DeferredSend<S> {
    inner: S,
}

impl<S, R> Service<R> for DeferredSend<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeferredSendFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        // The handler may run in `call`: under the stash too.
        let mut stash = Some(Stash::new());
        let inner = with_stash(&mut stash, || self.inner.call(req));
        DeferredSendFuture { inner, stash }
    }
}

/// Runs `f` with `stash` current on the thread (restoring whatever was
/// current before), and takes it back afterwards, also if `f` panics.
fn with_stash<T>(stash: &mut Option<Stash>, f: impl FnOnce() -> T) -> T {
    struct Restore<'a> {
        stash: &'a mut Option<Stash>,
        previous: Option<Option<Stash>>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            if let Some(previous) = self.previous.take() {
                let mine = STASH.try_with(|s| s.try_borrow_mut().ok().map(|mut s| std::mem::replace(&mut *s, previous))).ok().flatten();
                *self.stash = mine.flatten();
            }
        }
    }
    let swapped = STASH.try_with(|s| s.try_borrow_mut().ok().map(|mut s| std::mem::replace(&mut *s, stash.take()))).ok().flatten();
    // The thread-local is gone or busy: no stash, everything is sent at once.
    let _restore = Restore { previous: swapped, stash };
    f()
}

pin_project_lite::pin_project! {
    /// The future of [`DeferredSend`].
    pub(crate) struct DeferredSendFuture<F> {
        #[pin]
        inner: F,
        stash: Option<Stash>,
    }

    impl<F> PinnedDrop for DeferredSendFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped unfinished: send what is there.
            let this = this.project();
            flush(this.stash);
        }
    }
}

fn flush(stash: &mut Option<Stash>) {
    if let Some(stash) = stash.as_mut() {
        for item in stash.drain(..) {
            send(item);
        }
    }
}

impl<F: Future> Future for DeferredSendFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        let polled = with_stash(this.stash, || inner.poll(cx));
        if polled.is_ready() {
            // The Runtime API has the response: now the trace.
            flush(this.stash);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emitter::MemoryTransport;

    fn done_messages(cap: &MemoryTransport) -> Vec<String> {
        cap.datagrams().iter().filter_map(|d| String::from_utf8_lossy(d).split_once('\n').map(|(_, body)| body.to_owned())).collect()
    }

    #[test]
    fn deferred_items_wait_for_the_future_and_go_in_order() {
        let cap = MemoryTransport::default();
        let emitter = Arc::new(Emitter::for_extension(cap.clone()));
        // No stash current: given back, to be sent now.
        assert!(defer(Deferred::Done(emitter.clone(), "now".into())).is_some());

        let sent_by_call = emitter.clone();
        let mut service = DeferredSendLayer.layer(tower::service_fn(move |n: u32| {
            // The work of `call` is under the stash too.
            assert!(defer(Deferred::Done(sent_by_call.clone(), format!("call-{n}"))).is_none());
            let polled = sent_by_call.clone();
            let mut polls = 0;
            std::future::poll_fn(move |cx| {
                polls += 1;
                assert!(defer(Deferred::Done(polled.clone(), format!("poll-{polls}"))).is_none());
                if polls < 3 {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    Poll::Ready(Ok::<u32, std::convert::Infallible>(polls))
                }
            })
        }));
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let result = runtime.block_on(async {
            let fut = service.call(7);
            tokio::pin!(fut);
            // Nothing is sent while the future runs.
            std::future::poll_fn(|cx| {
                let polled = fut.as_mut().poll(cx);
                if polled.is_pending() {
                    assert!(cap.datagrams().is_empty());
                }
                polled
            })
            .await
        });
        assert_eq!(result.ok(), Some(3));
        let sent = done_messages(&cap);
        assert_eq!(sent.len(), 4, "{sent:?}");
        for (message, id) in sent.iter().zip(["call-7", "poll-1", "poll-2", "poll-3"]) {
            let v: serde_json::Value = serde_json::from_str(message).unwrap_or_default();
            assert_eq!(v["invocation_done"], id);
        }
        // Outside the future again: nothing is current.
        assert!(defer(Deferred::Done(emitter, "after".into())).is_some());
    }

    #[test]
    fn a_future_dropped_unfinished_sends_what_it_held() {
        let cap = MemoryTransport::default();
        let emitter = Arc::new(Emitter::for_extension(cap.clone()));
        let held = emitter.clone();
        let mut service = DeferredSendLayer.layer(tower::service_fn(move |_: ()| {
            assert!(defer(Deferred::Done(held.clone(), "dropped".into())).is_none());
            std::future::pending::<Result<(), std::convert::Infallible>>()
        }));
        let fut = service.call(());
        assert!(cap.datagrams().is_empty());
        drop(fut);
        let sent = done_messages(&cap);
        assert_eq!(sent.len(), 1);
        assert!(sent[0].contains("\"dropped\""));
    }
}
