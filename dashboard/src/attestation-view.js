// Who is running: the platform, the enclave identity, and whether it is a simulation.
import { h, message } from './dom.js';

export class AttestationView {
  constructor(container, { api, onError, onSimulation }) {
    this.container = container;
    this.api = api;
    this.onError = onError;
    this.onSimulation = onSimulation;
    container.replaceChildren(message('empty', 'Loading the attestation…'));
  }

  async load() {
    let a;
    try {
      a = await this.api.get('/v1/attestation');
    } catch (e) {
      if (e.unauthorized) return this.onError(e);
      this.container.replaceChildren(message('error', `The attestation could not be loaded: ${e.message}`, 'attestation-error'));
      return;
    }
    this.onSimulation(Boolean(a.simulation));
    const id = a.identity ?? {};
    const hex = (value) => h('code', { class: 'hex', title: value }, value ?? '–');
    const row = (label, value, testid) => [h('dt', {}, label), h('dd', { testid }, value)];
    const quoteBytes = a.quote ? Math.floor((a.quote.length * 3) / 4) - (a.quote.match(/=+$/)?.[0].length ?? 0) : 0;
    this.container.replaceChildren(
      a.simulation
        ? h(
            'p',
            { class: 'sim-banner', testid: 'attestation-simulation', role: 'note' },
            h('span', { class: 'badge badge-sim' }, 'SIMULATION'),
            ' Not an enclave: the root secret is in the data directory, so nothing here is confidential.',
          )
        : h('p', { class: 'msg msg-ok', testid: 'attestation-enclave' }, `Running in an enclave (${a.platform}).`),
      h(
        'dl',
        { class: 'facts' },
        row('Platform', a.platform, 'attestation-platform'),
        row('Measurement', hex(id.measurement), 'attestation-measurement'),
        row('Signer', hex(id.signer), 'attestation-signer'),
        row('Product ID', id.product_id ?? '–'),
        row('Security version', id.security_version ?? '–'),
        row('Debug', id.debug === undefined ? '–' : id.debug ? 'yes (debug enclave)' : 'no'),
        row('Quote', a.quote ? `${quoteBytes} bytes, binding nonce ${a.nonce}` : 'none'),
      ),
      a.quote ? h('details', {}, h('summary', {}, 'Quote (base64)'), h('pre', { class: 'code wrap' }, a.quote)) : null,
    );
  }
}
