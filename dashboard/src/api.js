// The admin API client: every request carries the bearer token; errors become ApiError.
import { readSse, StreamLost } from './sse.js';

export class ApiError extends Error {
  /** status 0 means the runtime could not be reached at all. */
  constructor(status, code, message, body = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.body = body;
  }

  /** The token was refused: stop everything and ask for it again. */
  get unauthorized() {
    return this.status === 401 || this.status === 403;
  }
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy or a crash; the status says enough
  }
  const code = body?.error?.code ?? `http.${response.status}`;
  const message = body?.error?.message ?? `${response.status} ${response.statusText}`.trim();
  return new ApiError(response.status, code, message, body);
}

export function createApi(token) {
  async function request(method, path, { body, contentType, signal, accept = 'application/json' } = {}) {
    const headers = { Authorization: `Bearer ${token}`, Accept: accept };
    if (contentType) headers['Content-Type'] = contentType;
    let response;
    try {
      response = await fetch(path, { method, headers, body, signal, cache: 'no-store' });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'network', 'the runtime cannot be reached');
    }
    return response;
  }

  async function json(method, path, options) {
    const response = await request(method, path, options);
    if (!response.ok) throw await errorFrom(response);
    if (response.status === 204) return null;
    return response.json();
  }

  return {
    get: (path, options) => json('GET', path, options),
    post: (path, value, options) =>
      json('POST', path, {
        ...options,
        body: value === undefined ? undefined : JSON.stringify(value),
        contentType: value === undefined ? undefined : 'application/json',
      }),
    putText: (path, text, options) => json('PUT', path, { ...options, body: text, contentType: 'application/toml' }),

    /**
     * Opens an SSE stream and reads it to its end. `onOpen` runs once the server has accepted it;
     * `onEvent` is awaited per event. Resolves when the server ends the stream; rejects with
     * ApiError (refused, not found, unreachable) or AbortError.
     */
    async stream(path, { signal, onOpen, onEvent }) {
      const response = await request('GET', path, { signal, accept: 'text/event-stream' });
      if (!response.ok) throw await errorFrom(response);
      onOpen?.();
      try {
        await readSse(response.body, onEvent);
      } catch (e) {
        if (e instanceof StreamLost) throw new ApiError(0, 'network', 'the connection to the runtime was lost');
        throw e;
      }
    },
  };
}
