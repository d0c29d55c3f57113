// The event journal as a live list, newest first, filterable by service and by kind.
import { h, setText } from './dom.js';
import { clock, summarize, cause, compact } from './format.js';

const NO_SERVICE = '(runtime)';
const BAD = new Set(['exited', 'failed', 'crash_loop', 'config_rejected', 'config_rolled_back', 'anomaly', 'scale_refused', 'journal_integrity']);
const GOOD = new Set(['up', 'ready', 'config_applied', 'config_confirmed', 'anomaly_cleared', 'runtime_started']);

function tone(entry) {
  const e = entry.event ?? {};
  if (BAD.has(e.kind)) return 'bad';
  if (e.kind === 'health_changed' || e.kind === 'runtime_health') {
    const level = e.health?.level ?? e.level;
    if (level === 'unhealthy' || level === 'not_ready') return 'bad';
    if (level === 'degraded') return 'warn';
    return 'good';
  }
  if (e.kind === 'backoff_scheduled' || e.kind === 'circuit' || e.kind === 'failover') return 'warn';
  return GOOD.has(e.kind) ? 'good' : 'plain';
}

export class JournalView {
  constructor(container, journal) {
    this.journal = journal;
    this.filter = { service: '', kind: '' };
    this.services = new Set();
    this.kinds = new Set();
    this.pending = null;
    this.serviceSelect = h('select', { testid: 'journal-service', 'aria-label': 'Show events of service', onchange: (e) => this.setFilter('service', e.target.value) });
    this.kindSelect = h('select', { testid: 'journal-kind', 'aria-label': 'Show events of kind', onchange: (e) => this.setFilter('kind', e.target.value) });
    this.count = h('span', { class: 'muted', testid: 'journal-count', 'aria-live': 'off' });
    this.list = h('ol', { class: 'events', testid: 'journal-list', 'aria-label': 'Journal events, newest first' });
    this.empty = h('p', { class: 'msg msg-empty', testid: 'journal-empty' }, 'Loading the journal…');
    container.replaceChildren(
      h('div', { class: 'toolbar' }, h('label', {}, 'Service ', this.serviceSelect), h('label', {}, 'Kind ', this.kindSelect), this.count),
      this.empty,
      h('div', { class: 'events-scroll' }, this.list),
    );
    this.refreshOptions();
    this.unsubscribe = journal.subscribe((change) => this.onChange(change));
  }

  /** Service names to offer even before they show up in the journal. */
  knowServices(names) {
    let grew = false;
    for (const name of names) {
      if (!this.services.has(name)) {
        this.services.add(name);
        grew = true;
      }
    }
    if (grew) this.refreshOptions();
  }

  setFilter(key, value) {
    this.filter[key] = value;
    this.renderAll();
  }

  matches(entry) {
    const service = entry.service ?? NO_SERVICE;
    return (!this.filter.service || this.filter.service === service) && (!this.filter.kind || this.filter.kind === entry.event?.kind);
  }

  onChange(change) {
    if (change.type === 'reset') {
      this.pending = null;
      this.renderAll();
      return;
    }
    if (change.type === 'missing') {
      this.list.prepend(h('li', { class: 'event gap', testid: 'journal-gap', 'data-gap': change.gap.from }, `Events #${change.gap.from}–#${change.gap.to} could not be loaded from the runtime.`));
      return;
    }
    // Batch DOM work per frame: a reconnection can replay many events at once.
    const first = !this.pending;
    this.pending ??= [];
    this.pending.push(...change.added);
    // A hidden tab gets no frames: keep no more than the journal itself keeps.
    if (this.pending.length > this.journal.capacity) this.pending.splice(0, this.pending.length - this.journal.capacity);
    if (first) requestAnimationFrame(() => this.flush());
  }

  flush() {
    const oldest = this.journal.entries[0]?.seq ?? Infinity;
    const added = (this.pending ?? []).filter((entry) => entry.seq >= oldest);
    this.pending = null;
    let grew = false;
    for (const entry of added) {
      const service = entry.service ?? NO_SERVICE;
      const kind = entry.event?.kind;
      if (!this.services.has(service) || (kind && !this.kinds.has(kind))) {
        this.services.add(service);
        if (kind) this.kinds.add(kind);
        grew = true;
      }
      if (this.matches(entry)) this.list.prepend(this.item(entry));
    }
    // Entries the journal no longer keeps leave the bottom of the list.
    const seqOf = (el) => Number(el.dataset.seq ?? el.dataset.gap);
    while (this.list.lastElementChild && seqOf(this.list.lastElementChild) < oldest) this.list.lastElementChild.remove();
    if (grew) this.refreshOptions();
    this.updateCount();
  }

  renderAll() {
    const items = [];
    for (const entry of this.journal.entries) {
      this.services.add(entry.service ?? NO_SERVICE);
      if (entry.event?.kind) this.kinds.add(entry.event.kind);
      if (this.matches(entry)) items.push(this.item(entry));
    }
    this.list.replaceChildren(...items.reverse());
    this.refreshOptions();
    this.updateCount();
  }

  updateCount() {
    const total = this.journal.entries.length;
    const shown = this.list.querySelectorAll('li[data-seq]').length;
    setText(this.count, total ? `${shown} of ${total} events` : '');
    this.empty.hidden = shown > 0;
    setText(this.empty, total ? 'No event matches the filter.' : this.journal.lastSeq === null ? 'Loading the journal…' : 'The journal is empty.');
  }

  refreshOptions() {
    const fill = (select, values, allLabel, current) => {
      const options = [h('option', { value: '' }, allLabel), ...[...values].sort().map((v) => h('option', { value: v }, v))];
      select.replaceChildren(...options);
      select.value = current;
    };
    fill(this.serviceSelect, this.services, 'all services', this.filter.service);
    fill(this.kindSelect, this.kinds, 'all kinds', this.filter.kind);
  }

  item(entry) {
    const kind = entry.event?.kind ?? 'unknown';
    const service = entry.service ?? '';
    const why = cause(entry.cause);
    return h(
      'li',
      { class: `event tone-${tone(entry)}`, testid: 'journal-event', 'data-seq': entry.seq, 'data-kind': kind, 'data-service': service, title: compact(entry.event) },
      h('span', { class: 'seq' }, `#${entry.seq}`),
      h('time', { datetime: entry.time }, clock(entry.time)),
      h('span', { class: 'svc name', title: service || 'the runtime' }, service || '—'),
      h('span', { class: 'kind' }, kind),
      h('span', { class: 'summary' }, summarize(entry.event), why ? h('span', { class: 'cause', testid: 'event-cause' }, `by ${why}`) : null),
    );
  }

  destroy() {
    this.unsubscribe();
  }
}
