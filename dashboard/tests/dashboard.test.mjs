// End-to-end tests of the dashboard: the real binary, the real page, headless Chromium.
// CLOISTER_BIN: the binary (default ../target/debug/cloister); CHROMIUM: the browser
// (default /usr/bin/chromium); CLOISTER_SCREENSHOT: where to save a screenshot of the main view.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { Runtime, TOKEN, assertSameOrigin, launchBrowser, openPage, pageOrigin, signIn, waitFor } from './harness.mjs';

const TIMEOUT = 90_000;

const CONFIG = `
[testing]
fault_injection = true

[testing.services.alpha]
kind = "core"
priority = "critical"

[testing.services.beta]
kind = "optional"
depends_on = ["alpha"]
work = "1ms"
`;

const node = (page, name) => page.locator(`[data-testid="graph-node"][data-name="${name}"]`);
const row = (page, name) => page.locator(`[data-testid="service-row"][data-name="${name}"]`);
const events = (page, service, kind) => page.locator(`[data-testid="journal-event"][data-service="${service}"][data-kind="${kind}"]`);

/** The seqs the page lists, in the order shown (newest first). */
const pageSeqs = (page) => page.locator('[data-testid="journal-event"]').evaluateAll((els) => els.map((el) => Number(el.dataset.seq)));

async function confirmDialog(page, title) {
  const dialog = page.getByTestId('confirm-dialog');
  await dialog.waitFor();
  assert.match(await dialog.textContent(), title);
  await page.getByTestId('confirm-ok').click();
  await dialog.waitFor({ state: 'detached' });
}

function assertNoProblems(problems) {
  assert.deepEqual(problems, [], 'the page logged errors');
}

describe('the dashboard', { timeout: 5 * TIMEOUT }, () => {
  let runtime;
  let origin;
  let browser;
  let page;
  let problems;
  let requests;

  before(async () => {
    runtime = await Runtime.create(CONFIG);
    await runtime.start();
    origin = await pageOrigin(runtime);
    browser = await launchBrowser();
    ({ page, problems, requests } = await openPage(browser));
    page.setDefaultTimeout(20_000);
  });

  after(async () => {
    await browser?.close();
    await origin?.close();
    await runtime?.cleanup();
  });

  it('shows only the sign-in form, refuses a wrong token, and shows the runtime with the right one', { timeout: TIMEOUT }, async () => {
    await page.goto(origin.url);
    await page.getByTestId('signin').waitFor();
    assert.equal(await page.getByTestId('dashboard').isVisible(), false);
    assert.equal(await page.getByTestId('sign-out').isVisible(), false);
    assert.equal(await page.getByTestId('connection').isVisible(), false);
    assert.equal(await page.getByTestId('graph-node').count(), 0);

    await signIn(page, 'not-the-admin-token-at-all');
    await page.getByTestId('signin-error').getByText(/the token was refused/i).waitFor();
    assert.equal(await page.getByTestId('dashboard').isVisible(), false);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);

    await signIn(page, TOKEN);
    await page.locator('[data-testid="connection"][data-state="live"]').waitFor();
    assert.equal(await page.getByTestId('signin').isVisible(), false);
    const { body } = await runtime.api('/v1/services');
    for (const s of body.services) {
      await node(page, s.name).waitFor();
      await row(page, s.name).waitFor();
    }
    assert.equal(await page.getByTestId('graph-node').count(), body.services.length);
    // Layer 0 is left of layer 1: beta depends on alpha.
    const [a, b] = [await node(page, 'alpha').boundingBox(), await node(page, 'beta').boundingBox()];
    assert.ok(a.x + a.width <= b.x, 'alpha (layer 0) is left of beta (layer 1)');
    await page.getByTestId('simulation-badge').waitFor();
    await page.getByTestId('attestation-simulation').waitFor();
    await page.getByTestId('config-version').getByText('version 1').waitFor();
    await page.locator('[data-testid="journal-event"][data-kind="runtime_started"]').first().waitFor();
    // The token lives in this tab's sessionStorage only.
    assert.equal(await page.evaluate((t) => Object.values(sessionStorage).includes(t), TOKEN), true);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    // The page, its script, its style and every API call come from the binary's own origin.
    assertSameOrigin(requests, origin.url);
    assertNoProblems(problems);
  });

  it('says that a node on redb is in no cluster, and what to do about it', { timeout: TIMEOUT }, async () => {
    const { body } = await runtime.api('/v1/cluster');
    assert.deepEqual([body.member, body.cluster, body.members], [false, undefined, []], 'a redb node answers without a cluster');
    const panel = page.getByTestId('cluster');
    await panel.getByTestId('cluster-none').waitFor();
    const advice = await panel.getByTestId('cluster-none').textContent();
    assert.match(advice, /This node is in no cluster\./);
    assert.match(advice, /\[storage\] backend = "postgres"/);
    assert.match(advice, /cloister cluster init/);
    assert.match(advice, /--join/);
    assert.equal(await panel.getByTestId('cluster-node').textContent(), `${body.node} — not a member: it holds no cluster key`);
    assert.equal(await panel.getByTestId('cluster-members').count(), 0);
    assert.equal(await panel.getByTestId('cluster-id').count(), 0);
    assertNoProblems(problems);
  });

  it("lists a cluster's members from the node's answer, marks this node and a stale member, and asks again every heartbeat", { timeout: TIMEOUT }, async () => {
    // A redb node has no cluster: the page gets canned answers to GET /v1/cluster (as
    // docs/api.md shows them) and the real runtime for everything else.
    const hex = (byte) => byte.repeat(32);
    const member = (node, age, key = 'aa') => ({
      node, platform: 'simulation', measurement: hex('1a'), signer: hex('2b'), product_id: 1, security_version: 3,
      address: `http://10.0.0.${node.length}:8420`, version: '0.1.0', key_check: hex(key),
      joined_at: '2026-12-06T15:40:00.000Z', last_heartbeat: '2026-12-06T15:45:00.000Z', heartbeat_age_ms: age,
    });
    const cluster = { id: 'c1'.repeat(16), policy: { policy: 'measurement', measurement: hex('1a') }, key_check: hex('aa'), created_by: '3f9c0a1b2c3d4e5f', created_at: '2026-12-06T15:40:00.000Z' };
    const self = '3f9c0a1b2c3d4e5f';
    const before = { node: self, member: true, key_check: hex('aa'), cluster, members: [member(self, 4_000), member('8a7b6c5d4e3f2a1b', 20_000), member('c0ffee0000000001', 15_000, 'bb')] };
    const afterwards = { ...before, members: [member(self, 1_000), member('8a7b6c5d4e3f2a1b', 2_000)] };
    let answer = { status: 200, body: before };
    let asked = 0;
    const { page: p, problems: seen, requests: urls } = await openPage(browser);
    p.setDefaultTimeout(20_000);
    await p.route('**/v1/cluster', (route) => {
      asked += 1;
      return route.fulfill({ status: answer.status, contentType: 'application/json', body: JSON.stringify(answer.body) });
    });
    await p.goto(origin.url);
    await signIn(p);
    const panel = p.getByTestId('cluster');
    const memberRow = (node) => panel.locator(`[data-testid="cluster-member"][data-node="${node}"]`);
    await memberRow(self).waitFor();

    assert.equal(await panel.getByTestId('cluster-node').textContent(), `${self} — a member: it holds the cluster key`);
    assert.equal(await panel.getByTestId('cluster-id').textContent(), cluster.id);
    const policy = panel.getByTestId('cluster-policy').locator('span');
    assert.equal(await policy.textContent(), `the same measurement (MRENCLAVE ${hex('1a').slice(0, 12)})`);
    assert.equal(await policy.getAttribute('title'), `the same measurement (MRENCLAVE ${hex('1a')})`);
    assert.equal(await panel.getByTestId('cluster-none').count(), 0);
    assert.equal(await panel.getByTestId('cluster-member').count(), 3);

    // The node answering: marked, fresh.
    assert.equal(await memberRow(self).getAttribute('data-self'), 'true');
    assert.equal(await memberRow(self).getAttribute('data-stale'), 'false');
    assert.equal(await memberRow(self).getByTestId('member-self').textContent(), 'this node');
    assert.equal(await memberRow(self).getByTestId('member-heartbeat').textContent(), '4s ago');
    // Shortened identities, the full value in the title.
    const measurement = memberRow(self).getByTestId('member-measurement');
    assert.equal(await measurement.textContent(), `${hex('1a').slice(0, 12)}…`);
    assert.equal(await measurement.getAttribute('title'), hex('1a'));
    assert.equal(await memberRow(self).getByTestId('member-signer').getAttribute('title'), hex('2b'));
    // Twenty seconds without a heartbeat is stale; fifteen (three heartbeats) is not yet.
    const stale = memberRow('8a7b6c5d4e3f2a1b');
    assert.equal(await stale.getAttribute('data-stale'), 'true');
    assert.equal(await stale.getAttribute('data-self'), 'false');
    assert.equal(await stale.getByTestId('member-heartbeat').textContent(), '20s ago stale');
    assert.equal(await memberRow('c0ffee0000000001').getAttribute('data-stale'), 'false');
    assert.equal(await panel.getByTestId('cluster-stale-count').textContent(), '1 stale');
    // A member whose key check is not the cluster's.
    assert.equal(await memberRow('c0ffee0000000001').getByTestId('member-key').textContent(), 'OTHER');
    assert.equal(await memberRow(self).getByTestId('member-key').textContent(), 'the cluster’s');

    // The database out of reach at the next refresh: said, and the last answer stays.
    const first = asked;
    answer = { status: 503, body: { error: { code: 'cluster.unavailable', message: 'the database is out of reach' } } };
    await panel.getByTestId('cluster-error').getByText(/could not be refreshed \(the database is out of reach\)/).waitFor();
    assert.ok(asked > first);
    assert.equal(await panel.getByTestId('cluster-member').count(), 3);

    // Back: the next refresh shows the members as they are now.
    answer = { status: 200, body: afterwards };
    await stale.and(p.locator('[data-stale="false"]')).waitFor();
    await memberRow('c0ffee0000000001').waitFor({ state: 'detached' });
    assert.equal(await panel.getByTestId('cluster-error').count(), 0);
    assert.equal(await panel.getByTestId('cluster-stale-count').count(), 0);
    assert.equal(await stale.getByTestId('member-heartbeat').textContent(), '2s ago');
    await p.context().close();
    assertSameOrigin(urls, origin.url);
    assertNoProblems(seen);
  });

  it('shows an injected panic as a restart in the graph, the table and the journal', { timeout: TIMEOUT }, async () => {
    const { body: before } = await runtime.api('/v1/services/alpha');
    const restarts = before.restart_count;
    await page.locator(`[data-testid="graph-node"][data-name="alpha"][data-restarts="${restarts}"]`).waitFor();

    const fault = await runtime.api('/v1/services/alpha/faults', { method: 'POST', body: { kind: 'panic' } });
    assert.ok([200, 202].includes(fault.status), JSON.stringify(fault.body));

    await page.locator(`[data-testid="graph-node"][data-name="alpha"][data-restarts="${restarts + 1}"]`).waitFor();
    await row(page, 'alpha').getByTestId('svc-restarts').getByText(String(restarts + 1), { exact: true }).waitFor();
    await events(page, 'alpha', 'fault_injected').first().waitFor();
    await events(page, 'alpha', 'exited').filter({ hasText: 'panic' }).first().waitFor();
    await events(page, 'alpha', 'starting').filter({ hasText: 'restart' }).first().waitFor();
    // Each event shows its cause.
    assert.match(await events(page, 'alpha', 'exited').first().getByTestId('event-cause').textContent(), /by service/);
    assert.match(await events(page, 'alpha', 'fault_injected').first().getByTestId('event-cause').textContent(), /by operator/);

    // The journal filters by service and by kind.
    await page.getByTestId('journal-service').selectOption('alpha');
    await page.getByTestId('journal-kind').selectOption('exited');
    const shown = await page.locator('[data-testid="journal-event"]').evaluateAll((els) => els.map((el) => `${el.dataset.service}/${el.dataset.kind}`));
    assert.ok(shown.length >= 1);
    assert.ok(shown.every((s) => s === 'alpha/exited'), shown.join(' '));
    await page.getByTestId('journal-service').selectOption('');
    await page.getByTestId('journal-kind').selectOption('');
    assertNoProblems(problems);
  });

  it('restarts a service from its panel, after a confirmation', { timeout: TIMEOUT }, async () => {
    await node(page, 'beta').click();
    await page.getByTestId('detail-name').getByText('beta', { exact: true }).waitFor();
    await page.getByTestId('detail-state').getByText('running').waitFor();

    // Cancelling does nothing.
    await page.getByTestId('action-restart').click();
    await page.getByTestId('confirm-dialog').waitFor();
    await page.getByTestId('confirm-cancel').click();
    await page.getByTestId('confirm-dialog').waitFor({ state: 'detached' });
    assert.equal(await page.getByTestId('action-status').textContent(), '');

    const { body: head } = await runtime.api('/v1/events?since=0&limit=1');
    await page.getByTestId('action-restart').click();
    await confirmDialog(page, /Restart beta\?/);
    await page.getByTestId('action-status').getByText(/accepted/).waitFor();
    // The journal shows the operator's command as the cause, then the new incarnation.
    const stopping = events(page, 'beta', 'stopping').filter({ hasText: /by operator \(restart\)/ }).first();
    await stopping.waitFor();
    const stoppedAt = Number(await stopping.getAttribute('data-seq'));
    assert.ok(stoppedAt > head.last_seq);
    await waitFor('beta to start again', async () => {
      const seqs = await events(page, 'beta', 'starting').evaluateAll((els) => els.map((el) => Number(el.dataset.seq)));
      return seqs.some((seq) => seq > stoppedAt);
    });
    await node(page, 'beta').and(page.locator('[data-state="running"]')).waitFor();

    // Let the charts gather a few samples, then record the main view.
    await waitFor('chart samples', async () => (await page.locator('[data-testid="chart-latency"] canvas').count()) > 0);
    if (process.env.CLOISTER_SCREENSHOT) {
      await page.evaluate(() => window.scrollTo(0, 0));
      await page.screenshot({ path: resolve(process.env.CLOISTER_SCREENSHOT) });
    }
    assertNoProblems(problems);
  });

  it('lists the problems of a rejected configuration, applies a good one, and diffs the two versions', { timeout: TIMEOUT }, async () => {
    const editor = page.getByTestId('config-editor');
    const running = await editor.inputValue();
    assert.match(running, /\[testing\.services\.alpha\]/, 'the editor starts with the running text');

    await editor.fill(`bogus_key = 1\n${running}`);
    await page.getByTestId('config-apply').click();
    await confirmDialog(page, /Apply this configuration\?/);
    await page.locator('[data-testid="config-outcome"][data-outcome="rejected"]').waitFor();
    const problem = await page.getByTestId('config-problem').first().textContent();
    assert.match(problem, /bogus_key/);
    await page.getByTestId('config-version').getByText('version 1').waitFor();

    await editor.fill(`${running}\n[services.beta.recovery]\nmax_restarts = 7\n`);
    await page.getByTestId('config-apply').click();
    await confirmDialog(page, /Apply this configuration\?/);
    await page.locator('[data-testid="config-outcome"][data-outcome="applied"]').getByText('version 2').waitFor();
    await page.getByTestId('config-version').getByText('version 2').waitFor();
    await page.locator('[data-testid="config-history-row"][data-version="2"]').waitFor();

    await page.getByTestId('diff-from').selectOption('1');
    await page.getByTestId('diff-to').selectOption('2');
    await page.getByTestId('diff-show').click();
    await page.getByTestId('diff-add').filter({ hasText: 'max_restarts = 7' }).waitFor();
    assert.equal(await page.getByTestId('diff-del').count(), 0);
    assertNoProblems(problems);
  });

  it('shows "disconnected" while the runtime is down, then resumes the journal without duplicates or gaps', { timeout: TIMEOUT }, async () => {
    await page.locator('[data-testid="connection"][data-state="live"]').waitFor();
    const seen = await pageSeqs(page);
    assert.ok(seen.length > 0);

    await runtime.stop('SIGKILL');
    await page.locator('[data-testid="connection"][data-state="disconnected"]').waitFor();
    await page.getByTestId('disconnected-banner').getByText(/Disconnected from the runtime/).waitFor();

    await runtime.start();
    await page.locator('[data-testid="connection"][data-state="live"]').waitFor({ timeout: 30_000 });
    await page.getByTestId('disconnected-banner').waitFor({ state: 'hidden' });

    // Wait until the page has caught up with the journal, then compare the two.
    const last = await waitFor('the page to catch up with the journal', async () => {
      const { body } = await runtime.api('/v1/events?since=0&limit=1');
      const seqs = await pageSeqs(page);
      return seqs[0] === body.last_seq && body.last_seq > Math.max(...seen) ? body.last_seq : null;
    });
    const shown = (await pageSeqs(page)).reverse();
    assert.equal(new Set(shown).size, shown.length, 'no seq is listed twice');
    const first = shown[0];
    const { body: journal } = await runtime.api(`/v1/events?since=${first - 1}&limit=${last - first + 1}`);
    assert.deepEqual(shown, journal.events.map((e) => e.seq), 'the page lists exactly the journal');
    assert.deepEqual(shown, Array.from({ length: last - first + 1 }, (_, i) => first + i), 'no gap');
    assert.ok(shown.includes(seen[0]) && shown.includes(last));
    await page.locator('[data-testid="journal-event"][data-kind="runtime_started"]').nth(1).waitFor();
    assertNoProblems(problems);
  });

  it('signs out, and a token refused later sends the page back to sign-in', { timeout: TIMEOUT }, async () => {
    await page.getByTestId('sign-out').click();
    await page.getByTestId('signin').waitFor();
    assert.equal(await page.getByTestId('dashboard').isVisible(), false);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);

    // A stored token that the runtime refuses: one sign-in form, no retry storm. The page's clock
    // is under the test's control and a minute of it passes at once: a page that kept retrying
    // (the live loop backs off 1 s doubling to at most 10 s) would ask again within it.
    const asked = [];
    let refused = 0;
    page.on('request', (r) => new URL(r.url()).pathname.startsWith('/v1/') && asked.push(r.url()));
    page.on('response', (r) => r.status() === 401 && (refused += 1));
    await page.clock.install();
    await page.evaluate(() => sessionStorage.setItem('cloister.admin-token', 'a-token-that-was-revoked'));
    await page.reload();
    await page.getByTestId('signin-error').getByText(/the token was refused/i).waitFor();
    assert.ok(refused >= 1, 'the runtime refused the stored token');
    const before = asked.length;
    await page.clock.runFor(60_000);
    await page.getByTestId('token-input').fill('x');
    assert.deepEqual(asked.slice(before), [], 'the page asked again after the refusal');
    assert.equal(await page.getByTestId('signin').count(), 1);
    assert.equal(await page.getByTestId('dashboard').isVisible(), false);
    assertSameOrigin(requests, origin.url);
    assertNoProblems(problems);
  });
});

describe('a hundred services with long names', { timeout: 3 * TIMEOUT }, () => {
  const name = (i) => `svc-${String(i).padStart(3, '0')}-with-a-deliberately-long-name-to-check-the-truncation`;
  let config = '[enclave]\nthreads = 160\nmemory_mib = 4096\n\n[testing]\nfault_injection = true\n';
  for (let i = 0; i < 100; i++) {
    config += `\n[testing.services.${name(i)}]\nkind = "optional"\n`;
    if (i >= 10) config += `depends_on = ["${name(i - 10)}"${i % 7 === 0 ? `, "${name(i - 3)}"` : ''}]\n`;
  }
  let runtime;
  let origin;
  let browser;

  before(async () => {
    assert.ok(name(0).length >= 60);
    runtime = await Runtime.create(config, { name: 'cloister-dashboard-hundred' });
    await runtime.start();
    origin = await pageOrigin(runtime);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await origin?.close();
    await runtime?.cleanup();
  });

  for (const [width, height] of [[1440, 900], [900, 800]]) {
    it(`stays readable at ${width}px: names truncated with tooltips, no horizontal page overflow`, { timeout: TIMEOUT }, async () => {
      const { page, problems, requests } = await openPage(browser, { width, height });
      page.setDefaultTimeout(30_000);
      await page.goto(origin.url);
      await signIn(page);
      await page.locator('[data-testid="connection"][data-state="live"]').waitFor();
      const { body } = await runtime.api('/v1/services');
      const count = body.services.length;
      assert.ok(count >= 100);
      await waitFor(`${count} graph nodes`, async () => (await page.getByTestId('graph-node').count()) === count);
      await waitFor(`${count} table rows`, async () => (await page.getByTestId('service-row').count()) === count);

      const layout = await page.evaluate(() => ({
        page: document.documentElement.scrollWidth,
        viewport: document.documentElement.clientWidth,
        panels: [...document.querySelectorAll('.panel')].map((p) => p.getBoundingClientRect().right),
      }));
      assert.ok(layout.page <= layout.viewport, `the page is ${layout.page}px wide in a ${layout.viewport}px viewport`);
      assert.ok(layout.panels.every((right) => right <= layout.viewport), `panels end at ${layout.panels}`);

      const longName = name(42);
      const target = page.locator(`[data-testid="graph-node"][data-name="${longName}"]`);
      assert.match(await target.getAttribute('title'), new RegExp(longName));
      const truncated = await target.locator('.node-name').evaluate((el) => el.scrollWidth > el.clientWidth);
      assert.ok(truncated, 'a long name is cut with an ellipsis');
      const graph = await page.getByTestId('graph').evaluate((el) => ({ scroll: el.scrollHeight > el.clientHeight || el.scrollWidth > el.clientWidth, height: el.clientHeight }));
      assert.ok(graph.scroll, 'the graph scrolls inside its panel');
      assert.ok(graph.height <= height, 'the graph does not take more than the viewport');

      await target.scrollIntoViewIfNeeded();
      await target.click();
      await page.getByTestId('detail-name').getByText(longName).waitFor();
      const nameCell = row(page, longName).locator('.name');
      assert.equal(await nameCell.getAttribute('title'), longName);
      await page.close();
      assertSameOrigin(requests, origin.url);
      assertNoProblems(problems);
    });
  }
});
