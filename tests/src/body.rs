//! A minimal in-memory `http_body::Body` made of a fixed list of frames (data and trailers).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// A body that yields pre-built frames, then ends (or fails, breaking the response off).
#[derive(Debug, Default)]
pub struct Frames {
    frames: VecDeque<Frame<Bytes>>,
    fail_at_end: bool,
}

impl Frames {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn data(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        let mut frames = VecDeque::new();
        if !data.is_empty() {
            frames.push_back(Frame::data(data));
        }
        Self {
            frames,
            fail_at_end: false,
        }
    }

    /// Data, then an error: the server resets the stream after the headers went out.
    pub fn data_then_reset(data: impl Into<Bytes>) -> Self {
        let mut body = Self::data(data);
        body.fail_at_end = true;
        body
    }

    /// Data followed by trailers (as a gRPC server answers).
    pub fn data_with_trailers(data: impl Into<Bytes>, trailers: HeaderMap) -> Self {
        let mut body = Self::data(data);
        body.frames.push_back(Frame::trailers(trailers));
        body
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.frames.pop_front() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None if self.fail_at_end => {
                self.fail_at_end = false;
                Poll::Ready(Some(Err(std::io::Error::other("reset on purpose"))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && !self.fail_at_end
    }

    fn size_hint(&self) -> SizeHint {
        // A body that fails must not announce its length: the cut would look complete.
        if !self.fail_at_end && self.frames.iter().all(|f| f.is_data()) {
            let len: usize = self
                .frames
                .iter()
                .filter_map(|f| f.data_ref())
                .map(Bytes::len)
                .sum();
            SizeHint::with_exact(len as u64)
        } else {
            SizeHint::default()
        }
    }
}
