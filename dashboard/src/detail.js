// The selected service: its figures, charts, circuit breakers, anomalies, and the lifecycle actions.
import { h, setText, message } from './dom.js';
import { duration, ms, percent, compact, dateTime } from './format.js';
import { healthText } from './graph.js';
import { ChartSet } from './charts.js';
import { confirmAction } from './dialog.js';

const ACTIONS = {
  restart: {
    label: 'Restart',
    explain: (name, dependents) =>
      `Replace ${name}'s incarnations. ${dependents.length ? `Its dependents (${dependents.join(', ')}) keep running; their requests wait in its mailbox.` : 'No service depends on it.'}`,
  },
  stop: {
    label: 'Stop',
    danger: true,
    explain: (name, dependents) =>
      `Stop ${name}. ${dependents.length ? `The services that depend on it are stopped first: ${dependents.join(', ')}.` : 'No service depends on it.'}`,
  },
  start: {
    label: 'Start',
    explain: (name) => `Start ${name}, and first whatever it depends on that is not running.`,
  },
};

export class DetailView {
  constructor(container, { api, services, onError }) {
    this.container = container;
    this.api = api;
    this.services = services;
    this.onError = onError;
    this.name = null;
    this.charts = null;
    this.showEmpty();
  }

  showEmpty() {
    this.charts?.destroy();
    this.charts = null;
    this.name = null;
    this.container.replaceChildren(message('empty', 'Select a service in the graph or the table to see its figures and act on it.', 'detail-empty'));
  }

  select(name) {
    if (name === this.name) return;
    this.charts?.destroy();
    this.name = name;
    const f = {};
    const dd = (key) => (f[key] = h('dd', { testid: `detail-${key}` }));
    const row = (label, key) => [h('dt', {}, label), dd(key)];
    this.status = h('p', { class: 'action-status', role: 'status', 'aria-live': 'polite', testid: 'action-status' });
    this.buttons = Object.entries(ACTIONS).map(([action, spec]) =>
      h('button', { type: 'button', class: spec.danger ? 'btn btn-danger' : 'btn', testid: `action-${action}`, onclick: () => this.act(action) }, spec.label),
    );
    const chartBox = h('div', { class: 'charts' });
    this.fields = f;
    this.circuits = h('div', { testid: 'detail-circuits' });
    this.anomalies = h('div', { testid: 'detail-anomalies' });
    this.container.replaceChildren(
      h('div', { class: 'detail-head' }, h('h3', { class: 'name', title: name, testid: 'detail-name' }, name), h('div', { class: 'actions' }, this.buttons)),
      this.status,
      (f.description = h('p', { class: 'muted description' })),
      (f.reason = h('p', { class: 'health-reason', testid: 'detail-reason', hidden: true })),
      h(
        'dl',
        { class: 'facts' },
        row('State', 'state'),
        row('Health', 'health'),
        row('Type', 'type'),
        row('Priority', 'priority'),
        row('Layer', 'layer'),
        row('Replicas', 'replicas'),
        row('Restarts', 'restarts'),
        row('Generation', 'generation'),
        row('Uptime', 'uptime'),
        row('Queue depth', 'queue'),
        row('Requests', 'requests'),
        row('Latency', 'latency'),
        row('Depends on', 'dependencies'),
        row('Capabilities', 'capabilities'),
      ),
      chartBox,
      h('h4', {}, 'Circuit breakers'),
      this.circuits,
      h('h4', {}, 'Anomalies'),
      this.anomalies,
    );
    this.charts = new ChartSet(chartBox, name);
  }

  update() {
    if (!this.name) return;
    const s = this.services.byName.get(this.name);
    if (!s) {
      this.showEmpty();
      this.container.prepend(message('info', `${this.name} is no longer registered.`));
      return;
    }
    const f = this.fields;
    const health = s.health?.level ?? 'unknown';
    setText(f.description, s.description ?? '');
    f.reason.hidden = !s.health?.reason;
    setText(f.reason, s.health?.reason ? `Health reason: ${s.health.reason}` : '');
    setText(f.state, s.state);
    f.state.className = `state-text state-${s.state}`;
    setText(f.health, healthText(s));
    f.health.className = `health-text health-${health}`;
    setText(f.type, s.type);
    setText(f.priority, s.startup_priority);
    setText(f.layer, s.layer);
    setText(f.replicas, `${s.replicas?.running ?? 0} running (min ${s.replicas?.min ?? 0}, max ${s.replicas?.max ?? 0})`);
    setText(f.restarts, s.restart_count);
    setText(f.generation, s.generation);
    f.uptime.title = s.started_at ? `started ${dateTime(s.started_at)}` : '';
    setText(f.uptime, s.started_at ? duration(s.uptime_seconds) : 'not running');
    setText(f.queue, s.queue_depth ?? '–');
    const r = s.requests ?? {};
    setText(f.requests, `${r.total ?? 0} total, ${r.errors ?? 0} errors (${percent(r.error_rate)})`);
    setText(f.latency, `p50 ${ms(r.latency_p50_ms)} · p90 ${ms(r.latency_p90_ms)} · p99 ${ms(r.latency_p99_ms)}`);
    setText(f.dependencies, s.dependencies?.length ? s.dependencies.join(', ') : 'nothing');
    setText(f.capabilities, s.capabilities?.length ? s.capabilities.join(', ') : 'none');
    this.charts.update(this.services.history.get(s.name) ?? []);
    this.renderCircuits(s.circuits ?? []);
    this.renderAnomalies(s.anomalies ?? []);
  }

  renderCircuits(circuits) {
    const key = JSON.stringify(circuits);
    if (key === this.circuitsKey) return;
    this.circuitsKey = key;
    if (!circuits.length) {
      this.circuits.replaceChildren(message('empty', 'No caller has a breaker on this service.'));
      return;
    }
    this.circuits.replaceChildren(
      h(
        'table',
        { class: 'small' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Caller'), h('th', { scope: 'col' }, 'State'), h('th', { scope: 'col' }, 'Failures in a row'), h('th', { scope: 'col' }, 'Times opened'))),
        h(
          'tbody',
          {},
          circuits.map((c) =>
            h('tr', { testid: 'circuit', 'data-state': c.state }, h('td', {}, h('span', { class: 'name', title: c.caller }, c.caller)), h('td', { class: `circuit-${c.state}` }, c.state), h('td', {}, c.consecutive_failures), h('td', {}, c.opened)),
          ),
        ),
      ),
    );
  }

  renderAnomalies(anomalies) {
    const key = JSON.stringify(anomalies);
    if (key === this.anomaliesKey) return;
    this.anomaliesKey = key;
    if (!anomalies.length) {
      this.anomalies.replaceChildren(message('empty', 'None raised.'));
      return;
    }
    this.anomalies.replaceChildren(
      h('ul', { class: 'anomalies' }, anomalies.map((a) => h('li', { testid: 'anomaly' }, h('strong', {}, a.signal), ` → ${a.action}`, h('span', { class: 'muted' }, ` (${compact(a.evidence)})`)))),
    );
  }

  async act(action) {
    const name = this.name;
    const spec = ACTIONS[action];
    const ok = await confirmAction({
      title: `${spec.label} ${name}?`,
      body: spec.explain(name, this.services.dependents(name)),
      confirm: spec.label,
      danger: spec.danger,
    });
    if (!ok || name !== this.name) return;
    for (const b of this.buttons) b.disabled = true;
    setText(this.status, `${spec.label} ${name}: sending…`);
    try {
      const answer = await this.api.post(`/v1/services/${encodeURIComponent(name)}/${action}`);
      if (name !== this.name) return;
      this.status.className = `action-status ${answer.accepted ? 'ok' : 'warn'}`;
      setText(this.status, `${spec.label} ${name}: ${answer.accepted ? 'accepted' : 'not accepted'} (${answer.state}) — ${answer.message}`);
    } catch (e) {
      if (e.unauthorized) return this.onError(e);
      if (name !== this.name) return;
      this.status.className = 'action-status error';
      setText(this.status, `${spec.label} ${name} failed: ${e.message}`);
    } finally {
      for (const b of this.buttons) b.disabled = false;
    }
  }

  destroy() {
    this.charts?.destroy();
    this.charts = null;
  }
}
