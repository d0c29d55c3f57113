//! The live streams, as server-sent events: the journal (`GET /v1/events/stream`, one entry per
//! event) and the services (`GET /v1/services/stream`, one sample per second).

use std::collections::VecDeque;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use runtime::journal::Entry;
use serde::de::DeserializeOwned;
use wire::services::ServiceSample;

use crate::client::Client;
use crate::error::{Error, from_answer};

type Chunks = Pin<Box<dyn Stream<Item = Result<Vec<u8>, reqwest::Error>> + Send>>;

/// One server-sent event: its name (`message` when it has none) and its data lines joined.
struct Frame {
    event: String,
    data: String,
}

/// A `text/event-stream` body, read frame by frame.
struct Frames {
    chunks: Chunks,
    buffer: Vec<u8>,
    ready: VecDeque<Frame>,
    url: String,
}

impl Frames {
    fn new(response: reqwest::Response, url: String) -> Frames {
        Frames {
            chunks: Box::pin(response.bytes_stream().map(|c| c.map(|b| b.to_vec()))),
            buffer: Vec::new(),
            ready: VecDeque::new(),
            url,
        }
    }

    /// The next frame with data; `None` once the runtime has closed the stream.
    async fn next(&mut self) -> Option<Result<Frame, Error>> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Some(Ok(frame));
            }
            match self.chunks.next().await? {
                Ok(chunk) => self.buffer.extend_from_slice(&chunk),
                Err(source) => {
                    return Some(Err(Error::Read {
                        url: self.url.clone(),
                        source,
                    }));
                }
            }
            self.split();
        }
    }

    /// Moves every whole frame in the buffer to `ready`.
    fn split(&mut self) {
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let raw = String::from_utf8_lossy(&raw);
            let mut event = "message".to_owned();
            let mut data = Vec::new();
            for line in raw.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            if data.is_empty() {
                // A keep-alive comment, or an event without data.
                continue;
            }
            self.ready.push_back(Frame {
                event,
                data: data.join("\n"),
            });
        }
    }

    fn decode<T: DeserializeOwned>(&self, data: &str) -> Result<T, Error> {
        serde_json::from_str(data).map_err(|source| Error::Decode {
            url: self.url.clone(),
            source,
        })
    }
}

/// Journal entries as they are appended, in sequence order, without gaps or duplicates; read
/// with [`EventStream::next`]. Ends (`None`) when the runtime closes the stream, as it does when
/// it shuts down.
pub struct EventStream(Frames);

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("url", &self.0.url)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next entry; `None` once the runtime has closed the stream.
    pub async fn next(&mut self) -> Option<Result<Entry, Error>> {
        let frame = match self.0.next().await? {
            Ok(frame) => frame,
            Err(e) => return Some(Err(e)),
        };
        Some(self.0.decode(&frame.data))
    }
}

/// The services, sampled once a second with each interval's figures; read with
/// [`ServiceStream::next`]. A sample the runtime could not take (its supervisor did not answer)
/// is an [`Error::Api`] with status 503 and the API's code, and the stream goes on. Ends
/// (`None`) when the runtime closes the stream.
pub struct ServiceStream(Frames);

impl std::fmt::Debug for ServiceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceStream")
            .field("url", &self.0.url)
            .finish_non_exhaustive()
    }
}

impl ServiceStream {
    /// The next sample; `None` once the runtime has closed the stream.
    pub async fn next(&mut self) -> Option<Result<ServiceSample, Error>> {
        loop {
            let frame = match self.0.next().await? {
                Ok(frame) => frame,
                Err(e) => return Some(Err(e)),
            };
            match frame.event.as_str() {
                "services" => return Some(self.0.decode(&frame.data)),
                "unavailable" => {
                    return Some(Err(from_answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        None,
                        frame.data.as_bytes(),
                    )));
                }
                // An event this client does not know yet: a newer runtime's; skipped.
                _ => {}
            }
        }
    }
}

impl Client {
    /// `GET /v1/events/stream`: every entry after `since`, then each one as it is appended.
    pub async fn event_stream(&self, since: u64) -> Result<EventStream, Error> {
        let path = format!("/v1/events/stream?since={since}");
        Ok(EventStream(self.open(&path).await?))
    }

    /// `GET /v1/services/stream` (admin): a sample of every service at once, then one a second.
    pub async fn service_stream(&self) -> Result<ServiceStream, Error> {
        Ok(ServiceStream(self.open("/v1/services/stream").await?))
    }

    /// Opens a stream at `path`: no timeout, since it lasts as long as the runtime.
    async fn open(&self, path: &str) -> Result<Frames, Error> {
        let (request, url) = self.untimed(Method::GET, path);
        let response = request.send().await.map_err(|source| Error::Unreachable {
            base: self.base_url().to_owned(),
            source,
        })?;
        if !response.status().is_success() {
            let status = response.status();
            let retry_after = crate::client::retry_after(response.headers());
            let body = response
                .bytes()
                .await
                .map_err(|source| Error::Read { url, source })?;
            return Err(from_answer(status, retry_after, &body));
        }
        Ok(Frames::new(response, url))
    }
}
