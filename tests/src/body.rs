//! A minimal in-memory `http_body::Body` made of a fixed list of frames (data and trailers).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// A body that yields pre-built frames, then ends.
#[derive(Debug, Default)]
pub struct Frames {
    frames: VecDeque<Frame<Bytes>>,
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
        Self { frames }
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
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.frames.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.frames.iter().all(|f| f.is_data()) {
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
