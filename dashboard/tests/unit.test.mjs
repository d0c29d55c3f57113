// Unit tests of the page's pure parts: the SSE parser, the journal, reconnection, formatting, diffs,
// the cluster's members.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SseParser, readSse, StreamLost } from '../src/sse.js';
import { Journal } from '../src/journal.js';
import { Live, backoffDelay } from '../src/live.js';
import { ApiError } from '../src/api.js';
import { Services, windowOf } from '../src/services.js';
import { cause, summarize, ms, percent, duration, ago } from '../src/format.js';
import { diffRows } from '../src/config-view.js';
import { HEARTBEAT_MS, STALE_AFTER_MS, isStale, inNoCluster, memberRows, policyText } from '../src/cluster-view.js';

describe('SseParser', () => {
  const parse = (...chunks) => {
    const parser = new SseParser(null);
    return chunks.flatMap((c) => parser.push(c));
  };

  it('reads id, event and data, and ends an event at a blank line', () => {
    assert.deepEqual(parse('id: 7\nevent: journal\ndata: {"seq":7}\n\n'), [{ id: '7', event: 'journal', data: '{"seq":7}' }]);
  });

  it('joins data lines, ignores comments, and accepts any line ending split across chunks', () => {
    assert.deepEqual(parse(': keep-alive\r\n', 'data: a\r', '\ndata:b\r\rdata: c\n', '\n'), [
      { id: null, event: 'message', data: 'a\nb' },
      { id: null, event: 'message', data: 'c' },
    ]);
  });

  it('waits for the end of an event split across chunks', () => {
    assert.deepEqual(parse('event: serv', 'ices\ndata: {"a":', '1}\n', '\n'), [{ id: null, event: 'services', data: '{"a":1}' }]);
  });

  it('dispatches nothing for an event without data', () => {
    assert.deepEqual(parse('event: x\n\n'), []);
  });
});

function body(chunks, { failAtEnd = false } = {}) {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const c of chunks) controller.enqueue(encoder.encode(c));
      if (failAtEnd) controller.error(new TypeError('network error'));
      else controller.close();
    },
  });
}

describe('readSse', () => {
  it('awaits the handler per event and drops an unfinished event at the end', async () => {
    const seen = [];
    await readSse(body(['data: 1\n\ndata: 2\n\ndata: 3\n']), async (e) => seen.push(e.data));
    assert.deepEqual(seen, ['1', '2']);
  });

  it('tells a cut connection (StreamLost) from a failing handler', async () => {
    await assert.rejects(readSse(body(['data: 1\n\n'], { failAtEnd: true }), () => {}), StreamLost);
    await assert.rejects(
      readSse(body(['data: 1\n\n']), () => {
        throw new RangeError('bug');
      }),
      RangeError,
    );
  });
});

describe('Journal', () => {
  const entry = (seq) => ({ seq, time: '2026-01-01T00:00:00Z', event: { kind: 'up' } });

  it('keeps each seq once, in order', () => {
    const j = new Journal();
    j.reset(0);
    j.add([entry(1), entry(2)]);
    j.add([entry(2), entry(1), entry(3)]);
    assert.deepEqual(j.entries.map((e) => e.seq), [1, 2, 3]);
    assert.equal(j.lastSeq, 3);
  });

  it('finds a gap and keeps only the newest entries', () => {
    const j = new Journal(3);
    j.reset(10);
    assert.deepEqual(j.gapBefore(14), { from: 11, to: 13 });
    assert.equal(j.gapBefore(11), null);
    j.add([11, 12, 13, 14, 15].map(entry));
    assert.deepEqual(j.entries.map((e) => e.seq), [13, 14, 15]);
  });
});

describe('Live', () => {
  it('backs off from 1 s, doubling, to 10 s at most', () => {
    assert.deepEqual([0, 1, 2, 3, 4, 5].map(backoffDelay), [1000, 2000, 4000, 8000, 10000, 10000]);
  });

  it('loads the last events, streams after them, and resumes from the last seq after a cut', { timeout: 5000 }, async () => {
    const entry = (seq) => ({ seq, event: { kind: 'up' } });
    const streamed = [];
    let connections = 0;
    let serverLast = 5;
    const states = [];
    const api = {
      async get(path) {
        if (path === '/v1/events?since=0&limit=1') return { events: [entry(1)], next: 1, last_seq: serverLast };
        if (path === '/v1/events?since=0&limit=300') return { events: [1, 2, 3, 4, 5].map(entry), last_seq: 5 };
        throw new Error(`unexpected ${path}`);
      },
      async stream(path, { signal, onOpen, onEvent }) {
        if (path.startsWith('/v1/services/stream')) {
          onOpen?.();
          await onEvent({ event: 'services', data: JSON.stringify({ at: '2026-01-01T00:00:00Z', readiness: {}, services: [] }) });
          return new Promise((_, reject) => signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))));
        }
        streamed.push(path);
        connections += 1;
        onOpen?.();
        if (connections === 1) {
          serverLast = 8;
          for (const seq of [6, 7]) await onEvent({ event: 'journal', id: String(seq), data: JSON.stringify(entry(seq)) });
          throw new ApiError(0, 'network', 'cut');
        }
        // The server repeats one it already sent, then goes on.
        for (const seq of [7, 8]) await onEvent({ event: 'journal', id: String(seq), data: JSON.stringify(entry(seq)) });
        live.stop();
        return undefined;
      },
    };
    const journal = new Journal();
    const live = new Live(api, journal, {
      onServices: () => {},
      onState: (state) => {
        states.push(state);
        if (state === 'disconnected') queueMicrotask(() => live.retryNow());
      },
    });
    live.start();
    while (!live.stopped) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(streamed, ['/v1/events/stream?since=5', '/v1/events/stream?since=7']);
    assert.deepEqual(journal.entries.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(states.slice(0, 4), ['connecting', 'live', 'disconnected', 'reconnecting']);
  });

  it('stops for good when the token is refused', { timeout: 5000 }, async () => {
    let calls = 0;
    const refused = [];
    const api = {
      async get() {
        calls += 1;
        throw new ApiError(401, 'auth.invalid_token', 'not it');
      },
    };
    const live = new Live(api, new Journal(), { onServices: () => {}, onRefused: (e) => refused.push(e.code) });
    live.start();
    while (!refused.length) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(refused, ['auth.invalid_token']);
    assert.equal(calls, 1);
    assert.equal(live.stopped, true);
  });
});

describe('Services', () => {
  it('keeps per-interval samples from the stream, and derives them from totals otherwise', () => {
    const s = new Services();
    const svc = (total, errors, window) => ({ name: 'a', queue_depth: 2, requests: { total, errors, latency_p50_ms: 1, latency_p99_ms: 9 }, window });
    s.update({ at: '2026-01-01T00:00:00Z', services: [svc(10, 0, { calls: 4, errors: 1, error_rate: 0.25, latency_p50_ms: 2, latency_p99_ms: 5 })] });
    assert.deepEqual(s.history.get('a')[0], { t: 1767225600, queue: 2, calls: 4, p50: 2, p99: 5, errorRate: 0.25 });
    assert.deepEqual(windowOf(svc(30, 5), { total: 10, errors: 0 }), { calls: 20, p50: 1, p99: 9, errorRate: 0.25 });
  });
});

describe('format', () => {
  it('says what an event is about and why', () => {
    assert.equal(summarize({ kind: 'exited', replica: 0, outcome: { outcome: 'panic', message: 'boom' } }), 'replica 0: panic: boom');
    assert.equal(summarize({ kind: 'health_changed', health: { level: 'unhealthy', reason: 'hung' } }), 'unhealthy: hung');
    assert.equal(summarize({ kind: 'backoff_scheduled', attempt: 1, delay_ms: 200 }), 'attempt 1, retry in 200 ms');
    assert.equal(summarize({ kind: 'something_new', a: 1, b: { c: 2 } }), 'a=1 b={c=2}');
    assert.equal(cause({ by: 'operator', command: 'restart' }), 'operator (restart)');
    assert.equal(cause({ by: 'config', version: 3 }), 'config (version 3)');
    assert.equal(cause({ by: 'startup' }), 'startup');
  });

  it('formats figures', () => {
    assert.equal(ms(null), '–');
    assert.equal(ms(0.25), '250 µs');
    assert.equal(ms(12.4), '12 ms');
    assert.equal(percent(0.5), '50.0%');
    assert.equal(duration(3725), '1h 2m');
    assert.equal(ago(4000), '4s ago');
    assert.equal(ago(999), '0s ago');
    assert.equal(ago(61_500), '1m 1s ago');
    assert.equal(ago(null), '–');
    assert.equal(ago(-1), '–');
  });
});

describe('diffRows', () => {
  it('marks added and removed lines with their numbers and folds long unchanged runs', () => {
    const before = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'x'].join('\n') + '\n';
    const after = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'y'].join('\n') + '\n';
    const rows = diffRows(before, after, 2);
    assert.deepEqual(rows.map((r) => r.type), ['skip', 'same', 'same', 'del', 'add']);
    assert.deepEqual(rows.slice(1).map((r) => [r.old, r.new, r.text]), [[8, 8, 'h'], [9, 9, 'i'], [10, undefined, 'x'], [undefined, 10, 'y']]);
  });
});

describe('cluster', () => {
  const member = (node, age, key = 'k1') => ({ node, heartbeat_age_ms: age, key_check: key, measurement: 'ab'.repeat(32), signer: 'cd'.repeat(32) });
  const status = (extra) => ({ node: 'n1', member: true, cluster: { id: 'c'.repeat(32), key_check: 'k1', policy: { policy: 'measurement', measurement: 'ab'.repeat(32) } }, ...extra });

  it('calls a member stale once its heartbeat is older than three heartbeats (15 s)', () => {
    assert.equal(HEARTBEAT_MS, 5000, 'HEARTBEAT in crates/cluster/src/node.rs');
    assert.equal(STALE_AFTER_MS, 15_000);
    const cases = [
      [0, false],
      [4_000, false],
      [15_000, false],
      [15_001, true],
      [600_000, true],
      [undefined, true],
      [null, true],
    ];
    for (const [age, stale] of cases) assert.equal(isStale({ heartbeat_age_ms: age }), stale, `age ${age}`);
  });

  it('marks the node answering, stale members and a member holding another key, in the runtime order', () => {
    const rows = memberRows(status({ members: [member('n0', 20_000), member('n1', 4_000), member('n2', 1_000, 'k2')] }));
    assert.deepEqual(
      rows.map((r) => [r.member.node, r.self, r.stale, r.key]),
      [
        ['n0', false, true, 'cluster'],
        ['n1', true, false, 'cluster'],
        ['n2', false, false, 'other'],
      ],
    );
    assert.deepEqual(memberRows(status({ cluster: undefined, members: [member('n1', 0)] })).map((r) => r.key), ['unknown']);
  });

  it('tells a node in no cluster (redb, or before `cluster init`) from one in a cluster', () => {
    assert.equal(inNoCluster({ node: 'n1', member: false, members: [] }), true, "a redb node's answer");
    assert.equal(inNoCluster(status({ members: [] })), false, 'a cluster recorded, no member yet');
    assert.equal(inNoCluster({ node: 'n1', member: false, members: [member('n0', 0)] }), false, 'members without a record');
    assert.deepEqual(memberRows({ node: 'n1', member: false, members: [] }), []);
  });

  it('says the admission policy in words, the identities shortened or in full', () => {
    const m = 'ab'.repeat(32);
    assert.equal(policyText({ policy: 'measurement', measurement: m }), 'the same measurement (MRENCLAVE abababababab)');
    assert.equal(policyText({ policy: 'measurement', measurement: m }, (x) => x), `the same measurement (MRENCLAVE ${m})`);
    assert.equal(policyText({ policy: 'signer', signer: 'cd'.repeat(32), product_id: 1, min_security_version: 2 }), 'the same signer (MRSIGNER cdcdcdcdcdcd), product id 1, security version ≥ 2');
    assert.equal(policyText({ policy: 'future', x: 1 }), 'policy=future x=1');
    assert.equal(policyText(undefined), '–');
  });
});
