// Text for numbers, durations and journal entries. Pure: no DOM.

export function duration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '–';
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** "4s ago", from milliseconds (an age as the runtime reports it). */
export function ago(milliseconds) {
  if (milliseconds == null || !Number.isFinite(milliseconds) || milliseconds < 0) return '–';
  return `${duration(milliseconds / 1000)} ago`;
}

export function ms(value) {
  if (value == null || !Number.isFinite(value)) return '–';
  if (value === 0) return '0 ms';
  if (value < 1) return `${(value * 1000).toFixed(value < 0.01 ? 1 : 0)} µs`;
  if (value < 1000) return `${value < 10 ? value.toFixed(2) : value.toFixed(0)} ms`;
  return `${(value / 1000).toFixed(2)} s`;
}

export function percent(rate) {
  if (rate == null || !Number.isFinite(rate)) return '–';
  if (rate === 0) return '0%';
  return `${(rate * 100).toFixed(rate < 0.01 ? 2 : 1)}%`;
}

/** "23:54:39.418" in local time, from an RFC 3339 timestamp. */
export function clock(time) {
  const d = new Date(time);
  if (Number.isNaN(d.getTime())) return String(time ?? '');
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function dateTime(time) {
  const d = new Date(time);
  return Number.isNaN(d.getTime()) ? String(time ?? '–') : d.toLocaleString();
}

export function shortHash(hash) {
  return typeof hash === 'string' ? hash.slice(0, 12) : '–';
}

/** A value as compact text: objects as `key=value` pairs, nested ones in braces. */
export function compact(value) {
  if (value === null || value === undefined) return '–';
  if (Array.isArray(value)) return value.length ? value.map(compact).join(', ') : 'none';
  if (typeof value === 'object') {
    return Object.entries(value)
      .map(([k, v]) => (typeof v === 'object' && v !== null ? `${k}={${compact(v)}}` : `${k}=${v}`))
      .join(' ');
  }
  return String(value);
}

function health(h) {
  if (!h) return '–';
  return h.reason ? `${h.level}: ${h.reason}` : h.level;
}

function outcome(o) {
  if (!o || typeof o !== 'object') return compact(o);
  const { outcome: kind, message, ...rest } = o;
  const extra = Object.keys(rest).length ? ` (${compact(rest)})` : '';
  return `${kind}${message ? `: ${message}` : ''}${extra}`;
}

/** One line saying what a journal event is about, from its fields (the kind is shown apart). */
export function summarize(event) {
  if (!event || typeof event !== 'object') return '';
  const { kind, ...f } = event;
  const replica = f.replica !== undefined ? `replica ${f.replica}` : null;
  switch (kind) {
    case 'health_changed':
      return health(f.health);
    case 'runtime_health':
      return f.reasons?.length ? `${f.level}: ${f.reasons.join('; ')}` : f.level;
    case 'exited':
      return [replica, outcome(f.outcome)].filter(Boolean).join(': ');
    case 'starting':
      return [replica, f.restart ? 'restart' : null, f.degraded_mode ? 'degraded mode' : null].filter(Boolean).join(', ');
    case 'backoff_scheduled':
      return `attempt ${f.attempt}, retry in ${ms(f.delay_ms)}`;
    case 'fault_injected':
      return [replica, `fault ${f.fault}`].filter(Boolean).join(': ');
    default:
      return Object.keys(f).length ? compact(f) : '';
  }
}

/** "operator (restart)", "recovery (restart)", "config (version 3)", "dependency (vault)". */
export function cause(c) {
  if (!c || typeof c !== 'object') return '';
  const { by, ...rest } = c;
  const values = Object.entries(rest).map(([k, v]) => (k === 'version' ? `version ${v}` : compact(v)));
  return values.length ? `${by} (${values.join(', ')})` : String(by);
}
