//! A streamed response body that keeps the invocation traced until its end.

use std::fmt::Debug;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

use crate::cause::cause_from_message;
use crate::document::Document;
use crate::layer::InvocationScope;

/// The body of a streamed response from [`StreamingHttpService`](super::StreamingHttpService):
/// the handler's body, unchanged frame for frame, with the handler
/// subsegment open until the stream ends.
///
/// At the end of the stream the subsegment gets `http.response.content_length`
/// (the bytes streamed) and ends, and the extension is told the invocation
/// is over. A body error marks it `fault` with the error's `Debug` text as
/// the cause; a body dropped before its end (the runtime gave up on the
/// stream) marks it `fault` with cause `StreamAborted`. Each poll runs under
/// the invocation's trace context, so subsegments begun while producing the
/// stream nest under the handler subsegment.
pub struct TracedBody<B> {
    inner: B,
    /// `None` once the stream ended (or for an untraced body).
    scope: Option<InvocationScope>,
    bytes: u64,
}

impl<B> Debug for TracedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedBody").field("bytes", &self.bytes).field("open", &self.scope.is_some()).finish_non_exhaustive()
    }
}

impl<B> TracedBody<B> {
    pub(super) fn new(inner: B, scope: Option<InvocationScope>) -> Self {
        TracedBody { inner, scope, bytes: 0 }
    }

    pub(super) fn untraced(inner: B) -> Self {
        TracedBody { inner, scope: None, bytes: 0 }
    }

    /// Ends the invocation with what the stream did.
    fn finish(&mut self, failure: Option<(&str, String)>) {
        let Some(mut scope) = self.scope.take() else { return };
        let bytes = self.bytes;
        scope.complete(|sub| {
            sub.update(|d: &mut Document| {
                d.set_content_length(bytes);
                if let Some((kind, message)) = failure {
                    d.fail_unless_caused(|| cause_from_message(kind, &message, None));
                }
            });
        });
    }
}

impl<B> Body for TracedBody<B>
where
    B: Body + Unpin,
    B::Error: Debug,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let inner = &mut this.inner;
        let Some(scope) = this.scope.as_mut() else { return Pin::new(inner).poll_frame(cx) };
        let polled = match scope.run(|| Pin::new(inner).poll_frame(cx)) {
            Ok(polled) => polled,
            Err(payload) => {
                scope.panicked(&*payload);
                this.scope = None;
                std::panic::resume_unwind(payload)
            }
        };
        match &polled {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) => this.bytes += data.remaining() as u64,
                // `lambda_http` ends the stream at the first frame that is not data (trailers).
                None => this.finish(None),
            },
            Poll::Ready(Some(Err(e))) => this.finish(Some(("StreamError", format!("{e:?}")))),
            Poll::Ready(None) => this.finish(None),
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for TracedBody<B> {
    fn drop(&mut self) {
        if self.scope.is_some() {
            self.finish(Some(("StreamAborted", "the response stream was dropped before its end".to_owned())));
        }
    }
}
