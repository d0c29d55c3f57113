// The latest services snapshot and, per service, the last HISTORY samples of its per-interval figures.

export const HISTORY = 120;

export class Services {
  constructor() {
    this.body = null; // the last {readiness, services, at}
    this.byName = new Map();
    this.history = new Map(); // name -> [{t, p50, p99, errorRate, calls, queue}]
    this.previous = new Map(); // name -> requests totals, for runtimes without `window`
    this.listeners = new Set();
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  update(body) {
    const t = Date.parse(body.at) / 1000 || Date.now() / 1000;
    this.body = body;
    this.byName = new Map(body.services.map((s) => [s.name, s]));
    for (const s of body.services) {
      const samples = this.history.get(s.name) ?? [];
      samples.push({ t, queue: s.queue_depth ?? null, ...windowOf(s, this.previous.get(s.name)) });
      if (samples.length > HISTORY) samples.splice(0, samples.length - HISTORY);
      this.history.set(s.name, samples);
      this.previous.set(s.name, s.requests);
    }
    for (const name of this.history.keys()) {
      if (!this.byName.has(name)) {
        this.history.delete(name);
        this.previous.delete(name);
      }
    }
    for (const listener of this.listeners) listener(body);
  }

  /** Services that depend on `name`. */
  dependents(name) {
    return (this.body?.services ?? []).filter((s) => s.dependencies?.includes(name)).map((s) => s.name);
  }
}

/** The figures over the last interval: the server's `window`, else the change in the totals. */
export function windowOf(service, previousRequests) {
  const w = service.window;
  if (w) {
    return {
      calls: w.calls ?? null,
      p50: w.latency_p50_ms ?? null,
      p99: w.latency_p99_ms ?? null,
      errorRate: w.error_rate ?? null,
    };
  }
  const r = service.requests ?? {};
  if (!previousRequests) return { calls: null, p50: r.latency_p50_ms ?? null, p99: r.latency_p99_ms ?? null, errorRate: null };
  const calls = Math.max(0, (r.total ?? 0) - (previousRequests.total ?? 0));
  const errors = Math.max(0, (r.errors ?? 0) - (previousRequests.errors ?? 0));
  return {
    calls,
    p50: r.latency_p50_ms ?? null,
    p99: r.latency_p99_ms ?? null,
    errorRate: calls ? errors / calls : 0,
  };
}
