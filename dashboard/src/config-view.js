// The running configuration, its history, a line diff between two versions, apply and roll back.
import { diffLines } from 'diff';
import { h, setText, message } from './dom.js';
import { dateTime, shortHash } from './format.js';
import { confirmAction } from './dialog.js';

const CONTEXT = 3;

/** Rows for a line diff: {type: 'same'|'add'|'del'|'skip', text, old, new}, unchanged runs collapsed. */
export function diffRows(before, after, context = CONTEXT) {
  const rows = [];
  let oldLine = 1;
  let newLine = 1;
  const parts = diffLines(before, after);
  parts.forEach((part, index) => {
    const lines = part.value.replace(/\n$/, '').split('\n');
    if (part.added) {
      for (const text of lines) rows.push({ type: 'add', text, new: newLine++ });
    } else if (part.removed) {
      for (const text of lines) rows.push({ type: 'del', text, old: oldLine++ });
    } else {
      const first = index === 0;
      const last = index === parts.length - 1;
      const keepHead = first ? 0 : context;
      const keepTail = last ? 0 : context;
      lines.forEach((text, i) => {
        const inHead = i < keepHead;
        const inTail = i >= lines.length - keepTail;
        if (inHead || inTail || lines.length <= keepHead + keepTail + 1) {
          rows.push({ type: 'same', text, old: oldLine, new: newLine });
        } else if (i === keepHead) {
          rows.push({ type: 'skip', text: `⋯ ${lines.length - keepHead - keepTail} unchanged line(s)` });
        }
        oldLine++;
        newLine++;
      });
    }
  });
  return rows;
}

export class ConfigView {
  constructor(container, { api, onError }) {
    this.api = api;
    this.onError = onError;
    this.texts = new Map(); // hash -> TOML text (a version's text never changes)
    this.current = null;
    this.history = [];
    this.prefilled = null;
    this.reloadTimer = null;

    this.summary = h('div', { class: 'config-summary', testid: 'config-summary' }, message('empty', 'Loading the configuration…'));
    this.rollbackButton = h('button', { type: 'button', class: 'btn', testid: 'config-rollback', onclick: () => this.rollback() }, 'Roll back');
    this.text = h('pre', { class: 'code', testid: 'config-text' });
    this.historyBox = h('div', { testid: 'config-history' });
    this.from = h('select', { testid: 'diff-from', 'aria-label': 'Compare from version' });
    this.to = h('select', { testid: 'diff-to', 'aria-label': 'Compare to version' });
    this.diffOut = h('div', { class: 'diff', testid: 'config-diff' });
    this.editor = h('textarea', { class: 'code', rows: 14, wrap: 'off', spellcheck: 'false', testid: 'config-editor', id: 'config-editor', 'aria-label': 'Configuration to apply (TOML)' });
    this.wait = h('input', { type: 'checkbox', testid: 'config-wait', id: 'config-wait' });
    this.applyButton = h('button', { type: 'button', class: 'btn btn-primary', testid: 'config-apply', onclick: () => this.apply() }, 'Apply');
    this.outcome = h('div', { class: 'outcome', testid: 'config-outcome', role: 'status', 'aria-live': 'polite' });

    container.replaceChildren(
      h('div', { class: 'config-head' }, this.summary, this.rollbackButton),
      h('details', {}, h('summary', {}, 'Running configuration'), this.text),
      h('h4', {}, 'History'),
      this.historyBox,
      h('h4', {}, 'Compare two versions'),
      h('div', { class: 'toolbar' }, h('label', {}, 'From ', this.from), h('label', {}, 'to ', this.to), h('button', { type: 'button', class: 'btn', testid: 'diff-show', onclick: () => this.showDiff() }, 'Show diff')),
      this.diffOut,
      h('h4', {}, 'Apply a configuration'),
      this.editor,
      h(
        'div',
        { class: 'toolbar' },
        this.applyButton,
        h('button', { type: 'button', class: 'btn', testid: 'config-reset', onclick: () => this.resetEditor() }, 'Reset to running'),
        h('label', { for: 'config-wait', title: 'Answer after the watch window: rolled back if things got worse' }, this.wait, ' wait for the watch window'),
      ),
      this.outcome,
    );
  }

  /** Reloads soon (config events come in bursts). */
  reloadSoon() {
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => this.load(), 250);
  }

  /** Journal entries about configuration: reload, and tell about rollbacks. */
  onJournal(entries) {
    let reload = false;
    for (const entry of entries) {
      const kind = entry.event?.kind ?? '';
      if (kind.startsWith('config_')) reload = true;
      if (kind === 'config_rolled_back') {
        const e = entry.event;
        this.showOutcome('rolled_back', [h('strong', {}, `Version ${e.from} was rolled back to version ${e.to}`), `: ${e.reason}`]);
      }
    }
    if (reload) this.reloadSoon();
  }

  async load() {
    try {
      const [current, history] = await Promise.all([this.api.get('/v1/config'), this.api.get('/v1/config/history')]);
      this.current = current;
      this.history = history.versions ?? [];
      this.texts.set(current.hash, current.text);
      this.render();
    } catch (e) {
      if (e.unauthorized) return this.onError(e);
      if (!this.current) this.summary.replaceChildren(message('error', `The configuration could not be loaded: ${e.message}`));
    }
  }

  render() {
    const c = this.current;
    this.summary.replaceChildren(
      h('span', { class: 'config-version', testid: 'config-version' }, `version ${c.version}`),
      h('span', { class: `badge status-${c.status}` }, c.status),
      h('span', { class: 'muted' }, ` from ${c.source}, applied ${dateTime(c.applied_at)}, sha256 `),
      h('code', { title: c.hash }, shortHash(c.hash)),
    );
    setText(this.text, c.text);
    if (this.editor.value === '' || this.editor.value === this.prefilled) {
      this.editor.value = c.text;
      this.prefilled = c.text;
    }

    this.historyBox.replaceChildren(
      this.history.length
        ? h(
            'div',
            { class: 'table-scroll short' },
            h(
              'table',
              { class: 'small' },
              h('thead', {}, h('tr', {}, ['Version', 'Applied', 'Source', 'Status', 'SHA-256'].map((t) => h('th', { scope: 'col' }, t)))),
              h(
                'tbody',
                {},
                this.history.map((v) =>
                  h('tr', { testid: 'config-history-row', 'data-version': v.version }, h('td', {}, v.version), h('td', {}, dateTime(v.applied_at)), h('td', {}, v.source), h('td', {}, h('span', { class: `badge status-${v.status}` }, v.status)), h('td', {}, h('code', { title: v.hash }, shortHash(v.hash)))),
                ),
              ),
            ),
          )
        : message('empty', 'No history yet.'),
    );

    const versions = this.history.map((v) => v.version);
    const fill = (select, preferred) => {
      const keep = Number(select.value);
      select.replaceChildren(...versions.map((v) => h('option', { value: v }, `version ${v}`)));
      select.value = String(versions.includes(keep) ? keep : preferred);
    };
    fill(this.to, versions[0]);
    fill(this.from, versions[1] ?? versions[0]);
  }

  async textOf(version) {
    const entry = this.history.find((v) => v.version === version);
    if (entry && this.texts.has(entry.hash)) return this.texts.get(entry.hash);
    const answer = await this.api.get(`/v1/config/versions/${version}`);
    this.texts.set(answer.hash, answer.text);
    return answer.text;
  }

  async showDiff() {
    const from = Number(this.from.value);
    const to = Number(this.to.value);
    if (!from || !to) return;
    this.diffOut.replaceChildren(message('empty', 'Loading…'));
    let before;
    let after;
    try {
      [before, after] = await Promise.all([this.textOf(from), this.textOf(to)]);
    } catch (e) {
      if (e.unauthorized) return this.onError(e);
      const why = e.code === 'config.unknown_version' ? 'the runtime no longer keeps it' : e.message;
      this.diffOut.replaceChildren(message('error', `A version could not be loaded: ${why}`));
      return;
    }
    const rows = diffRows(before, after);
    const added = rows.filter((r) => r.type === 'add').length;
    const removed = rows.filter((r) => r.type === 'del').length;
    const title = h('p', { class: 'muted' }, `version ${from} → version ${to}: `, h('span', { class: 'diff-add-count' }, `+${added}`), ' ', h('span', { class: 'diff-del-count' }, `−${removed}`), ' lines');
    if (!added && !removed) {
      this.diffOut.replaceChildren(message('empty', `Version ${from} and version ${to} have the same text.`));
      return;
    }
    const sign = { add: '+', del: '−', same: ' ', skip: '' };
    this.diffOut.replaceChildren(
      title,
      h(
        'div',
        { class: 'diff-lines', role: 'table', 'aria-label': `Line diff from version ${from} to version ${to}` },
        rows.map((r) =>
          h(
            'div',
            { class: `diff-row diff-${r.type}`, role: 'row', testid: `diff-${r.type}` },
            h('span', { class: 'ln', role: 'cell' }, r.old ?? ''),
            h('span', { class: 'ln', role: 'cell' }, r.new ?? ''),
            h('span', { class: 'sign', role: 'cell', 'aria-label': r.type === 'add' ? 'added' : r.type === 'del' ? 'removed' : null }, sign[r.type]),
            h('span', { class: 'text', role: 'cell' }, r.text),
          ),
        ),
      ),
    );
  }

  resetEditor() {
    if (!this.current) return;
    this.editor.value = this.current.text;
    this.prefilled = this.current.text;
  }

  showOutcome(kind, content) {
    this.outcome.className = `outcome outcome-${kind}`;
    this.outcome.dataset.outcome = kind;
    this.outcome.replaceChildren(...[content].flat());
  }

  async apply() {
    const text = this.editor.value;
    const wait = this.wait.checked;
    const ok = await confirmAction({
      title: 'Apply this configuration?',
      body: `The runtime checks it first and rejects it with its problems if it is not valid. ${wait ? 'The answer comes after the watch window: a version that makes things worse is rolled back.' : 'It is then watched; a version that makes things worse is rolled back (shown here and in the journal).'}`,
      confirm: 'Apply',
    });
    if (!ok) return;
    this.applyButton.disabled = true;
    this.showOutcome('pending', wait ? 'Applying, and watching it…' : 'Applying…');
    try {
      const answer = await this.api.putText(`/v1/config${wait ? '?wait=true' : ''}`, text);
      // The editor follows the running text again from here on, unless edited.
      if (answer.outcome === 'applied' || answer.outcome === 'unchanged') this.prefilled = text;
      this.describe(answer);
    } catch (e) {
      if (e.unauthorized) return this.onError(e);
      if (e.body?.outcome === 'rejected') {
        const problems = e.body.problems ?? [];
        this.showOutcome('rejected', [
          h('strong', {}, `Rejected: ${problems.length} problem${problems.length === 1 ? '' : 's'}. Nothing was changed.`),
          h('ul', { class: 'problems', testid: 'config-problems' }, problems.map((p) => h('li', { testid: 'config-problem' }, h('code', {}, p.path || '(file)'), ': ', p.message))),
        ]);
      } else {
        this.showOutcome('error', `The configuration could not be applied: ${e.message}${e.code ? ` (${e.code})` : ''}`);
      }
    } finally {
      this.applyButton.disabled = false;
      this.reloadSoon();
    }
  }

  describe(answer) {
    switch (answer.outcome) {
      case 'applied':
        this.showOutcome('applied', [
          h('strong', {}, `Applied as version ${answer.version}.`),
          ` ${answer.changed?.length ? `Changed: ${answer.changed.join(', ')}.` : 'No service changed.'}`,
          answer.watching ? ' It is being watched; a rollback would show here and in the journal.' : '',
        ]);
        break;
      case 'unchanged':
        this.showOutcome('unchanged', `Unchanged: version ${answer.version} already runs this text.`);
        break;
      case 'rolled_back':
        this.showOutcome('rolled_back', [h('strong', {}, `Rolled back from version ${answer.from} to version ${answer.to}`), `: ${answer.reason}`]);
        break;
      default:
        this.showOutcome('applied', `The runtime answered: ${answer.outcome}`);
    }
  }

  async rollback() {
    const ok = await confirmAction({
      title: 'Roll back the configuration?',
      body: 'This applies the last good version before the running one again.',
      confirm: 'Roll back',
      danger: true,
    });
    if (!ok) return;
    this.rollbackButton.disabled = true;
    try {
      this.describe(await this.api.post('/v1/config/rollback'));
    } catch (e) {
      if (e.unauthorized) return this.onError(e);
      this.showOutcome('error', `Rollback failed: ${e.message}`);
    } finally {
      this.rollbackButton.disabled = false;
      this.reloadSoon();
    }
  }

  destroy() {
    clearTimeout(this.reloadTimer);
  }
}
