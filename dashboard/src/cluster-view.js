// The cluster (docs/cluster.md): this node and its membership, the cluster's record, and every
// member with its identity and last heartbeat, from GET /v1/cluster, asked again every heartbeat.
import { h, message } from './dom.js';
import { ago, clock, compact, dateTime, shortHash } from './format.js';

/** How often a member heartbeats (`HEARTBEAT` in crates/cluster/src/node.rs). */
export const HEARTBEAT_MS = 5000;
/** A member whose last heartbeat is older than three heartbeats is shown as stale. */
export const STALE_AFTER_MS = 3 * HEARTBEAT_MS;
/** How often the view asks again while the page is live: once a heartbeat. */
export const REFRESH_MS = HEARTBEAT_MS;

/** Whether a member missed three heartbeats; an age the runtime did not give counts as missed. */
export function isStale(member) {
  const age = member?.heartbeat_age_ms;
  return !(Number.isFinite(age) && age <= STALE_AFTER_MS);
}

/** True when the answer names no cluster and no member: redb storage, or before `cluster init`. */
export function inNoCluster(status) {
  return !status?.cluster && !status?.members?.length;
}

/**
 * The members as the table shows them: each with whether it is the node answering, whether its
 * heartbeat is stale, and whether it holds the cluster's key ('cluster'), another ('other'), or
 * the cluster is not recorded ('unknown'). In the runtime's order (by node id).
 */
export function memberRows(status) {
  const recorded = status?.cluster?.key_check ?? null;
  return (status?.members ?? []).map((member) => ({
    member,
    self: member.node === status.node,
    stale: isStale(member),
    key: recorded === null ? 'unknown' : member.key_check === recorded ? 'cluster' : 'other',
  }));
}

/** The admission policy in words; `hex` shortens the identities (pass `(x) => x` for the full text). */
export function policyText(policy, hex = shortHash) {
  if (!policy || typeof policy !== 'object') return '–';
  switch (policy.policy) {
    case 'measurement':
      return `the same measurement (MRENCLAVE ${hex(policy.measurement)})`;
    case 'signer':
      return `the same signer (MRSIGNER ${hex(policy.signer)}), product id ${policy.product_id}, security version ≥ ${policy.min_security_version}`;
    default:
      return compact(policy);
  }
}

const code = (value) => h('code', { title: value }, value ?? '–');
const shortCode = (value, testid) => h('code', { class: 'short-hex', title: value, testid }, typeof value === 'string' ? `${shortHash(value)}…` : '–');

// Liveness first: on a narrow screen the table scrolls and the identity columns go off to the right.
const COLUMNS = [
  ['Node'],
  ['Last heartbeat', `by the database's clock; stale after ${STALE_AFTER_MS / 1000} s (three heartbeats)`],
  ['Address'],
  ['Version', "Cloister's version on the node"],
  ['Key', "whether the node holds the cluster's key (by its check value)"],
  ['Platform'],
  ['Measurement', 'MRENCLAVE (hover for the full value)'],
  ['Signer', 'MRSIGNER (hover for the full value)'],
  ['Product', 'ISVPRODID'],
  ['SVN', 'ISVSVN, the security version'],
  ['Joined'],
];

export class ClusterView {
  constructor(container, { api, onError }) {
    this.container = container;
    this.api = api;
    this.onError = onError;
    this.status = null;
    this.timer = null;
    this.asked = 0; // answers to older requests than the last are dropped
    this.stopped = false;
    container.replaceChildren(message('empty', 'Loading the cluster…'));
  }

  /** Asks now, then every REFRESH_MS until paused. */
  async load() {
    clearTimeout(this.timer);
    this.stopped = false;
    const asked = ++this.asked;
    let status = null;
    let failure = null;
    try {
      status = await this.api.get('/v1/cluster');
    } catch (e) {
      if (e.unauthorized) return this.onError(e);
      failure = e;
    }
    if (asked !== this.asked || this.stopped) return;
    if (status) {
      this.status = status;
      this.at = new Date();
    }
    this.render(failure);
    this.timer = setTimeout(() => this.load(), REFRESH_MS);
  }

  /** Stops asking (the connection is lost); load() starts again. */
  pause() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Journal entries: an admission or a new cluster shows at once. */
  onJournal(entries) {
    if (this.stopped) return;
    if (entries.some((e) => e.event?.kind === 'audit' && e.event.action?.startsWith('cluster.'))) this.load();
  }

  render(failure) {
    const s = this.status;
    if (!s) {
      this.container.replaceChildren(message('error', `The cluster could not be loaded: ${failure.message}`, 'cluster-error'));
      return;
    }
    const row = (label, value, testid) => [h('dt', {}, label), h('dd', { testid }, value)];
    const membership = s.member ? 'a member: it holds the cluster key' : 'not a member: it holds no cluster key';
    const c = s.cluster;
    const parts = [
      failure ? message('error', `The cluster could not be refreshed (${failure.message}); below is the answer of ${clock(this.at)}.`, 'cluster-error') : null,
      h(
        'dl',
        { class: 'facts' },
        row('This node', [code(s.node), ` — ${membership}`], 'cluster-node'),
        c ? row('Cluster', code(c.id), 'cluster-id') : null,
        c ? row('Policy', h('span', { title: policyText(c.policy, (x) => x) }, policyText(c.policy)), 'cluster-policy') : null,
        c ? row('Created', [`by `, code(c.created_by), ` at ${dateTime(c.created_at)}`], 'cluster-created') : null,
      ),
      inNoCluster(s) ? this.noCluster() : this.table(s),
      h('p', { class: 'muted small', testid: 'cluster-updated' }, `As of ${clock(this.at)}; asked again every ${REFRESH_MS / 1000} s.`),
    ];
    this.container.replaceChildren(...parts.flat().filter(Boolean));
  }

  noCluster() {
    return h(
      'div',
      { class: 'msg msg-info', testid: 'cluster-none' },
      h('p', {}, h('strong', {}, 'This node is in no cluster.')),
      h(
        'p',
        {},
        'A cluster is several nodes on one PostgreSQL database: each needs ',
        h('code', {}, '[storage] backend = "postgres"'),
        ' and the database’s URL. Then ',
        h('code', {}, 'cloister cluster init --url http://NODE:8420'),
        ' against one of them makes the cluster, and the others start with ',
        h('code', {}, '--join http://NODE:8420'),
        '. docs/cluster.md has the details.',
      ),
    );
  }

  table(s) {
    const rows = memberRows(s);
    if (!rows.length) return message('empty', 'No node is registered in the database yet.', 'cluster-no-members');
    const stale = rows.filter((r) => r.stale).length;
    return [
      h('h4', {}, `Members (${rows.length})`, stale ? h('span', { class: 'badge badge-stale', testid: 'cluster-stale-count' }, `${stale} stale`) : null),
      h(
        'div',
        { class: 'table-scroll short' },
        h(
          'table',
          { class: 'small members', testid: 'cluster-members' },
          h('thead', {}, h('tr', {}, COLUMNS.map(([label, title]) => h('th', { scope: 'col', title }, label)))),
          h('tbody', {}, rows.map((r) => this.memberRow(r))),
        ),
      ),
    ];
  }

  memberRow({ member: m, self, stale, key }) {
    const classes = [self ? 'self' : null, stale ? 'stale' : null].filter(Boolean).join(' ');
    return h(
      'tr',
      { class: classes || null, testid: 'cluster-member', 'data-node': m.node, 'data-self': String(self), 'data-stale': String(stale) },
      h('td', {}, h('code', { class: 'name', title: m.node }, m.node), self ? h('span', { class: 'badge badge-self', testid: 'member-self' }, 'this node') : null),
      h(
        'td',
        { class: stale ? 'heartbeat stale' : 'heartbeat', title: m.last_heartbeat, testid: 'member-heartbeat' },
        ago(m.heartbeat_age_ms),
        stale ? ' ' : null,
        stale ? h('span', { class: 'badge badge-stale', testid: 'member-stale', title: `no heartbeat for more than ${STALE_AFTER_MS / 1000} s (three heartbeats)` }, 'stale') : null,
      ),
      h('td', { class: 'address' }, h('span', { class: 'name', title: m.address }, m.address)),
      h('td', {}, m.version),
      h('td', { class: key === 'other' ? 'key-other' : null, title: m.key_check, testid: 'member-key' }, { cluster: 'the cluster’s', other: 'OTHER', unknown: '–' }[key]),
      h('td', {}, m.platform),
      h('td', {}, shortCode(m.measurement, 'member-measurement')),
      h('td', {}, shortCode(m.signer, 'member-signer')),
      h('td', { class: 'num' }, m.product_id),
      h('td', { class: 'num' }, m.security_version),
      h('td', { title: m.joined_at }, dateTime(m.joined_at)),
    );
  }

  destroy() {
    this.pause();
  }
}
