// The live connection: the journal (initial page, then its stream) and the services stream, with
// reconnection (1 s doubling to 10 s) and resumption from the last seq seen.
import { ApiError } from './api.js';

export const INITIAL_EVENTS = 300;
/** With no `services` event for this long, the connection counts as lost (the server sends one a second). */
export const STALE_AFTER_MS = 5000;
/** Only when the runtime has no services stream: how often GET /v1/services is asked instead. */
export const POLL_FALLBACK_MS = 2000;

export function backoffDelay(attempt) {
  return Math.min(1000 * 2 ** attempt, 10000);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(new DOMException('aborted', 'AbortError'));
    }, { once: true });
  });
}

export class Live {
  /**
   * @param api        from createApi
   * @param journal    a Journal
   * @param handlers   onServices(body, source), onState(state, detail), onConnected(), onRefused(error)
   */
  constructor(api, journal, handlers) {
    this.api = api;
    this.journal = journal;
    this.handlers = handlers;
    this.stopped = true;
    this.controller = null;
    this.wake = null;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.run().catch((e) => console.error('dashboard: the live loop failed', e));
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.watchdog);
    this.controller?.abort();
    this.wake?.();
  }

  /** Skips the rest of the backoff wait. */
  retryNow() {
    this.wake?.();
  }

  state(state, detail = {}) {
    this.handlers.onState?.(state, detail);
  }

  async run() {
    let attempt = 0;
    let everLive = false;
    while (!this.stopped) {
      const controller = new AbortController();
      this.controller = controller;
      let failure = null;
      this.state(everLive ? 'reconnecting' : 'connecting', { attempt });
      try {
        await this.connect(controller, () => {
          attempt = 0;
          everLive = true;
          this.state('live');
        });
        failure = new ApiError(0, 'network', 'the runtime ended the stream');
      } catch (e) {
        failure = e;
      } finally {
        clearTimeout(this.watchdog);
        controller.abort();
      }
      if (this.stopped) return;
      if (failure instanceof ApiError && failure.unauthorized) {
        this.stopped = true;
        this.handlers.onRefused?.(failure);
        return;
      }
      if (!(failure instanceof ApiError) && failure?.name !== 'AbortError') {
        console.error('dashboard: a live update failed', failure);
      }
      const delay = backoffDelay(attempt);
      attempt += 1;
      const reason = failure instanceof ApiError ? failure.message : 'the connection was lost';
      this.state('disconnected', { retryAt: Date.now() + delay, reason, attempt });
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  async connect(controller, onLive) {
    const { signal } = controller;
    const journal = this.journal;
    // What the journal holds now. On the first connection, or when the runtime's journal is
    // behind ours (a different data directory), load the last INITIAL_EVENTS entries afresh;
    // otherwise the stream below resumes after the last seq we have.
    const head = await this.api.get('/v1/events?since=0&limit=1', { signal });
    if (journal.lastSeq === null || head.last_seq < journal.lastSeq) {
      const since = Math.max(0, head.last_seq - INITIAL_EVENTS);
      const page = await this.api.get(`/v1/events?since=${since}&limit=${INITIAL_EVENTS}`, { signal });
      journal.reset(since);
      journal.add(page.events);
    }
    this.handlers.onConnected?.();

    let journalOpen = false;
    let servicesOpen = false;
    const opened = () => {
      if (journalOpen && servicesOpen) onLive();
    };
    const journalStream = this.api.stream(`/v1/events/stream?since=${journal.lastSeq}`, {
      signal,
      onOpen: () => {
        journalOpen = true;
        opened();
      },
      onEvent: (event) => this.journalEvent(event, signal),
    });
    const servicesFeed = this.servicesFeed(controller, () => {
      if (!servicesOpen) {
        servicesOpen = true;
        opened();
      }
    });
    // Whichever ends first ends the connection; the caller aborts the other.
    await Promise.race([journalStream, servicesFeed]);
  }

  async journalEvent(event, signal) {
    if (event.event !== 'journal') return;
    const entry = JSON.parse(event.data);
    const gap = this.journal.gapBefore(entry.seq);
    if (gap) {
      // The stream promises no gaps; should one appear anyway, fetch it before going on.
      const page = await this.api.get(`/v1/events?since=${gap.from - 1}&limit=${Math.min(10000, gap.to - gap.from + 1)}`, { signal });
      this.journal.add(page.events.filter((e) => e.seq <= gap.to));
      const left = this.journal.gapBefore(entry.seq);
      if (left) this.journal.markMissing(left);
    }
    this.journal.add([entry]);
  }

  async servicesFeed(controller, onData) {
    const { signal } = controller;
    const arm = () => {
      clearTimeout(this.watchdog);
      this.watchdog = setTimeout(() => controller.abort(), STALE_AFTER_MS);
    };
    try {
      arm();
      await this.api.stream('/v1/services/stream', {
        signal,
        onEvent: (event) => {
          if (event.event !== 'services') return;
          arm();
          this.handlers.onServices(JSON.parse(event.data), 'stream');
          onData();
        },
      });
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      // A runtime without the services stream: ask every POLL_FALLBACK_MS instead.
      clearTimeout(this.watchdog);
      for (;;) {
        const body = await this.api.get('/v1/services', { signal });
        this.handlers.onServices({ ...body, at: new Date().toISOString() }, 'poll');
        onData();
        await sleep(POLL_FALLBACK_MS, signal);
      }
    }
  }
}
