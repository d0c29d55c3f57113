// The Cloister operator dashboard: sign-in, then the live views over the admin API.
import './style.css';
import { createApi } from './api.js';
import { Journal } from './journal.js';
import { Services } from './services.js';
import { Live } from './live.js';
import { GraphView } from './graph.js';
import { ServiceTable } from './table.js';
import { DetailView } from './detail.js';
import { JournalView } from './journal-view.js';
import { ConfigView } from './config-view.js';
import { AttestationView } from './attestation-view.js';
import { ClusterView } from './cluster-view.js';
import { byId, h, setText } from './dom.js';
import { clock } from './format.js';

const TOKEN_KEY = 'cloister.admin-token';

const ui = {
  signin: byId('signin'),
  form: byId('signin-form'),
  token: byId('token'),
  signinError: byId('signin-error'),
  dashboard: byId('dashboard'),
  signOut: byId('sign-out'),
  connection: byId('connection'),
  readiness: byId('readiness'),
  reasons: byId('readiness-reasons'),
  simulation: byId('simulation-badge'),
  banner: byId('disconnected-banner'),
};

/** Everything that lives while signed in; destroy() leaves nothing behind. */
class Session {
  constructor(token) {
    this.api = createApi(token);
    this.journal = new Journal();
    this.services = new Services();
    this.selected = null;
    this.lastUpdate = null;
    const onError = (e) => refused(e);
    const select = (name) => this.select(name);

    this.graph = new GraphView(byId('graph'), select);
    this.table = new ServiceTable(byId('services'), select);
    this.detail = new DetailView(byId('detail'), { api: this.api, services: this.services, onError });
    this.journalView = new JournalView(byId('journal'), this.journal);
    this.config = new ConfigView(byId('config'), { api: this.api, onError });
    this.attestation = new AttestationView(byId('attestation'), {
      api: this.api,
      onError,
      onSimulation: (simulation) => (ui.simulation.hidden = !simulation),
    });
    this.cluster = new ClusterView(byId('cluster'), { api: this.api, onError });
    byId('graph').replaceChildren(h('p', { class: 'msg msg-empty' }, 'Loading the services…'));

    this.journal.subscribe((change) => {
      if (change.type !== 'add') return;
      this.config.onJournal(change.added);
      this.cluster.onJournal(change.added);
    });
    this.services.subscribe((body) => this.render(body));
    this.live = new Live(this.api, this.journal, {
      onServices: (body) => this.services.update(body),
      onState: (state, detail) => this.connectionState(state, detail),
      onConnected: () => {
        this.config.load();
        this.attestation.load();
        this.cluster.load();
      },
      onRefused: onError,
    });
  }

  start() {
    this.live.start();
  }

  select(name) {
    this.selected = name;
    this.detail.select(name);
    this.render(this.services.body);
  }

  render(body) {
    if (!body) return;
    this.lastUpdate = body.at ?? new Date().toISOString();
    const services = body.services ?? [];
    this.graph.update(services, this.selected);
    this.table.update(services, this.selected);
    this.detail.update();
    this.journalView.knowServices(services.map((s) => s.name));
    const readiness = body.readiness ?? { level: 'unknown', reasons: [] };
    ui.readiness.hidden = false;
    ui.readiness.className = `badge readiness-${readiness.level}`;
    ui.readiness.dataset.level = readiness.level;
    setText(ui.readiness, readiness.level.replace('_', ' '));
    ui.readiness.title = readiness.reasons?.join('\n') || 'every core service is up';
    ui.reasons.hidden = !readiness.reasons?.length;
    setText(ui.reasons, readiness.reasons?.length ? `${readiness.level.replace('_', ' ')}: ${readiness.reasons.join('; ')}` : '');
  }

  connectionState(state, detail) {
    this.state = state;
    clearInterval(this.countdown);
    ui.connection.hidden = false;
    ui.connection.dataset.state = state;
    ui.connection.className = `conn conn-${state}`;
    document.body.classList.toggle('stale', state === 'disconnected' || state === 'reconnecting');
    if (state === 'disconnected' || state === 'reconnecting') this.cluster.pause();
    const labels = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…', disconnected: 'disconnected' };
    setText(ui.connection, labels[state] ?? state);
    if (state !== 'disconnected' && state !== 'reconnecting') {
      ui.banner.hidden = true;
      return;
    }
    const since = this.lastUpdate ? ` The figures below are from ${clock(this.lastUpdate)}.` : '';
    if (state === 'reconnecting') {
      this.showBanner(`Disconnected from the runtime: reconnecting…${since}`, false);
      return;
    }
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((detail.retryAt - Date.now()) / 1000));
      this.showBanner(`Disconnected from the runtime (${detail.reason}). Retrying in ${seconds} s.${since}`, true);
    };
    tick();
    this.countdown = setInterval(tick, 1000);
  }

  showBanner(text, retry) {
    ui.banner.hidden = false;
    ui.banner.replaceChildren(
      h('span', {}, text),
      retry ? h('button', { type: 'button', class: 'btn', testid: 'retry-now', onclick: () => this.live.retryNow() }, 'Retry now') : null,
    );
  }

  destroy() {
    this.live.stop();
    clearInterval(this.countdown);
    this.detail.destroy();
    this.journalView.destroy();
    this.config.destroy();
    this.cluster.destroy();
    for (const id of ['graph', 'services', 'detail', 'journal', 'config', 'attestation', 'cluster']) byId(id).replaceChildren();
    document.body.classList.remove('stale');
  }
}

let session = null;

function showSignIn(error = '') {
  session?.destroy();
  session = null;
  ui.dashboard.hidden = true;
  ui.signOut.hidden = true;
  ui.connection.hidden = true;
  ui.readiness.hidden = true;
  ui.reasons.hidden = true;
  ui.simulation.hidden = true;
  ui.banner.hidden = true;
  ui.signin.hidden = false;
  ui.signinError.hidden = !error;
  setText(ui.signinError, error);
  ui.token.value = '';
  ui.token.focus();
}

function showDashboard(token) {
  ui.signin.hidden = true;
  ui.signinError.hidden = true;
  ui.dashboard.hidden = false;
  ui.signOut.hidden = false;
  session = new Session(token);
  session.start();
}

/** The runtime refused the token: stop every stream and ask again. */
function refused(error) {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignIn(`The token was refused: ${error.message}. Sign in with the admin token.`);
}

ui.form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = ui.token.value.trim();
  if (!token) return;
  const button = ui.form.querySelector('button[type=submit]');
  button.disabled = true;
  ui.signinError.hidden = true;
  try {
    await createApi(token).get('/v1/services');
    sessionStorage.setItem(TOKEN_KEY, token);
    showDashboard(token);
  } catch (e) {
    const text = e.unauthorized ? `The token was refused: ${e.message}.` : `The runtime cannot be reached (${e.message}). Try again when it is up.`;
    ui.signinError.hidden = false;
    setText(ui.signinError, text);
    ui.token.select();
  } finally {
    button.disabled = false;
  }
});

ui.signOut.addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignIn();
});

const stored = sessionStorage.getItem(TOKEN_KEY);
if (stored) showDashboard(stored);
else showSignIn();
