// Server-sent events over fetch(). EventSource cannot send an Authorization header, so the page
// reads the stream itself: https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream

/** Incremental parser: feed it text chunks, it calls `onEvent({id, event, data})` per complete event. */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.reset();
  }

  reset() {
    this.data = [];
    this.event = '';
    this.id = null;
  }

  /** Feeds a chunk; returns the events it completed (also passed to onEvent). */
  push(chunk) {
    this.buffer += chunk;
    const done = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) break;
      // A lone "\r" at the very end may be the first half of "\r\n": wait for the next chunk.
      if (match[0] === '\r' && match.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      const event = this.line(line);
      if (event) done.push(event);
    }
    for (const event of done) this.onEvent?.(event);
    return done;
  }

  line(line) {
    if (line === '') {
      if (this.data.length === 0) {
        this.reset();
        return null;
      }
      const event = { id: this.id, event: this.event || 'message', data: this.data.join('\n') };
      this.reset();
      return event;
    }
    if (line.startsWith(':')) return null; // a comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id' && !value.includes('\0')) this.id = value;
    return null; // `retry` and unknown fields are ignored
  }
}

/** The connection broke while reading (as opposed to a handler failing). */
export class StreamLost extends Error {
  constructor(cause) {
    super('the stream was cut', { cause });
    this.name = 'StreamLost';
  }
}

/**
 * Reads an SSE response body to its end, awaiting `onEvent` for each event in order (so a handler
 * may fetch before the next event is read). Resolves when the server ends the stream; rejects with
 * StreamLost when the connection breaks, AbortError when aborted, or whatever a handler throws.
 */
export async function readSse(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser(null);
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw e.name === 'AbortError' ? e : new StreamLost(e);
      }
      const { value, done } = chunk;
      // At the end, an event without its closing blank line is discarded, as the standard says.
      if (done) return;
      for (const event of parser.push(decoder.decode(value, { stream: true }))) await onEvent(event);
    }
  } finally {
    reader.releaseLock?.();
  }
}
