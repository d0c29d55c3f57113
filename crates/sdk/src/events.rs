//! The live event stream (`GET /v1/events/stream`): server-sent events, one journal entry each.

use std::collections::VecDeque;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use runtime::journal::Entry;

use crate::error::Error;

type Chunks = Pin<Box<dyn Stream<Item = Result<Vec<u8>, reqwest::Error>> + Send>>;

/// Journal entries as they are appended, in sequence order, without gaps or duplicates; read
/// with [`EventStream::next`]. Ends (`None`) when the runtime closes the stream, as it does when
/// it shuts down.
pub struct EventStream {
    chunks: Chunks,
    buffer: Vec<u8>,
    ready: VecDeque<Entry>,
    url: String,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("url", &self.url)
            .field("buffered", &self.buffer.len())
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl EventStream {
    pub(crate) fn new(response: reqwest::Response, url: String) -> EventStream {
        EventStream {
            chunks: Box::pin(response.bytes_stream().map(|c| c.map(|b| b.to_vec()))),
            buffer: Vec::new(),
            ready: VecDeque::new(),
            url,
        }
    }

    /// The next entry; `None` once the runtime has closed the stream.
    pub async fn next(&mut self) -> Option<Result<Entry, Error>> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return Some(Ok(entry));
            }
            let chunk = match self.chunks.next().await? {
                Ok(chunk) => chunk,
                Err(source) => {
                    return Some(Err(Error::Read {
                        url: self.url.clone(),
                        source,
                    }));
                }
            };
            self.buffer.extend_from_slice(&chunk);
            if let Err(e) = self.frames() {
                return Some(Err(e));
            }
        }
    }

    /// Moves every whole frame in the buffer to `ready`.
    fn frames(&mut self) -> Result<(), Error> {
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let frame = String::from_utf8_lossy(&frame);
            let data: Vec<&str> = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
                // A keep-alive comment, or an event without data.
                continue;
            }
            let entry = serde_json::from_str(&data.join("\n")).map_err(|source| Error::Decode {
                url: self.url.clone(),
                source,
            })?;
            self.ready.push_back(entry);
        }
        Ok(())
    }
}
