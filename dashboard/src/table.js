// The services table: one row per service, updated in place every second.
import { h, setText } from './dom.js';
import { duration, ms, percent } from './format.js';
import { healthText } from './graph.js';

const COLUMNS = [
  ['name', 'Service'],
  ['type', 'Type'],
  ['priority', 'Priority'],
  ['state', 'State'],
  ['health', 'Health'],
  ['replicas', 'Replicas', 'running / min / max'],
  ['restarts', 'Restarts'],
  ['uptime', 'Uptime'],
  ['queue', 'Queue'],
  ['latency', 'p50 / p99', 'request latency since start'],
  ['errors', 'Errors', 'error rate since start'],
];

const NUMERIC = new Set(['replicas', 'restarts', 'uptime', 'queue', 'latency', 'errors']);
const cellClass = (key) => `col-${key}${NUMERIC.has(key) ? ' num' : ''}`;

function order(a, b) {
  return a.layer - b.layer || a.name.localeCompare(b.name);
}

export class ServiceTable {
  constructor(container, onSelect) {
    this.onSelect = onSelect;
    this.filter = '';
    this.rows = new Map();
    const search = h('input', {
      type: 'search',
      class: 'filter',
      placeholder: 'Filter by name, state or health',
      'aria-label': 'Filter services',
      testid: 'service-filter',
      oninput: (e) => {
        this.filter = e.target.value.trim().toLowerCase();
        this.applyFilter();
      },
    });
    this.count = h('span', { class: 'muted', testid: 'service-count' });
    this.body = h('tbody');
    this.empty = h('p', { class: 'msg msg-empty', hidden: true }, 'No service matches the filter.');
    container.replaceChildren(
      h('div', { class: 'toolbar' }, search, this.count),
      h(
        'div',
        { class: 'table-scroll' },
        h('table', { class: 'services', testid: 'service-table' }, h('thead', {}, h('tr', {}, COLUMNS.map(([key, label, title]) => h('th', { scope: 'col', class: cellClass(key), title }, label)))), this.body),
      ),
      this.empty,
    );
  }

  update(services, selected) {
    const seen = new Set();
    let previous = null;
    for (const s of [...services].sort(order)) {
      seen.add(s.name);
      let row = this.rows.get(s.name);
      if (!row) {
        row = this.row(s.name);
        this.rows.set(s.name, row);
      }
      // Keep the DOM order without moving rows that are already in place.
      const expected = previous ? previous.el.nextSibling : this.body.firstChild;
      if (expected !== row.el) this.body.insertBefore(row.el, expected);
      previous = row;
      this.fill(row, s, selected);
    }
    for (const [name, row] of this.rows) {
      if (!seen.has(name)) {
        row.el.remove();
        this.rows.delete(name);
      }
    }
    setText(this.count, `${services.length} service${services.length === 1 ? '' : 's'}`);
    this.applyFilter();
  }

  row(name) {
    const cells = {};
    const el = h('tr', { testid: 'service-row', 'data-name': name });
    for (const [key] of COLUMNS) {
      cells[key] = h('td', { class: cellClass(key), testid: `svc-${key}` });
      el.append(cells[key]);
    }
    cells.name.append(h('button', { type: 'button', class: 'link name', title: name, onclick: () => this.onSelect(name) }, name));
    return { el, cells, text: '' };
  }

  fill(row, s, selected) {
    const c = row.cells;
    const health = s.health?.level ?? 'unknown';
    row.el.classList.toggle('selected', s.name === selected);
    row.el.dataset.state = s.state;
    row.el.dataset.health = health;
    setText(c.type, s.type);
    setText(c.priority, s.startup_priority);
    c.state.className = `col-state state-text state-${s.state}`;
    setText(c.state, s.state);
    c.health.className = `col-health health-text health-${health}`;
    setText(c.health, health);
    c.health.title = healthText(s);
    setText(c.replicas, `${s.replicas?.running ?? 0} / ${s.replicas?.min ?? 0} / ${s.replicas?.max ?? 0}`);
    setText(c.restarts, s.restart_count);
    setText(c.uptime, s.state === 'running' || s.state === 'degraded' ? duration(s.uptime_seconds) : '–');
    setText(c.queue, s.queue_depth ?? '–');
    setText(c.latency, `${ms(s.requests?.latency_p50_ms)} / ${ms(s.requests?.latency_p99_ms)}`);
    setText(c.errors, percent(s.requests?.error_rate));
    row.text = `${s.name} ${s.state} ${health} ${s.type}`.toLowerCase();
  }

  applyFilter() {
    let shown = 0;
    for (const row of this.rows.values()) {
      const hide = Boolean(this.filter) && !row.text.includes(this.filter);
      if (row.el.hidden !== hide) row.el.hidden = hide;
      if (!hide) shown += 1;
    }
    this.empty.hidden = shown > 0 || this.rows.size === 0;
  }
}
