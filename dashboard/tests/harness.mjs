// Helpers for the browser tests: start the real `cloister` binary on loopback (it picks the port and
// says which), wait for it on a condition (never a fixed sleep), and drive Chromium through
// playwright-core.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { constants as fs } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const dashboardDir = resolve(here, '..');
export const TOKEN = 'dashboard-test-admin-token-0123456789';
export const binary = resolve(dashboardDir, process.env.CLOISTER_BIN ?? '../target/debug/cloister');

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Polls `check` every `everyMs` (at most) until it returns a truthy value or the deadline passes. */
export async function waitFor(what, check, { timeoutMs = 30000, everyMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * A runtime: the binary with a config and a data dir. The first start() listens on a port the
 * system picks (port 0) and reads the address from the first line the binary prints; start() again
 * after stop() asks for that same address (`--listen`), so a page that was open finds the runtime
 * where it was. That second bind can only fail if another process took the port in between: the
 * page's origin cannot change, so this is the least racy way, and the failure would be loud.
 */
export class Runtime {
  static async create(configBody, { name = 'cloister-dashboard-test' } = {}) {
    const dir = await mkdtemp(join(tmpdir(), `${name}-`));
    const runtime = new Runtime(dir);
    const config = `[runtime]\nlisten = "127.0.0.1:0"\ndata_dir = "${join(dir, 'data')}"\n\n${configBody}`;
    await writeFile(runtime.configPath, config);
    return runtime;
  }

  constructor(dir) {
    this.dir = dir;
    this.configPath = join(dir, 'cloister.toml');
    this.address = null;
    this.port = null;
    this.url = null;
    this.proc = null;
    this.log = '';
  }

  async start() {
    await access(binary, fs.X_OK).catch(() => {
      throw new Error(`no cloister binary at ${binary}: build it (cargo build -p cloister) or set CLOISTER_BIN`);
    });
    const args = ['run', '--config', this.configPath];
    if (this.address) args.push('--listen', this.address);
    const proc = spawn(binary, args, {
      env: { ...process.env, CLOISTER_ADMIN_TOKEN: TOKEN, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    this.exited = once(proc, 'exit');
    proc.stdout.on('data', (d) => (this.log += d));
    proc.stderr.on('data', (d) => (this.log += d));
    proc.on('error', (e) => (this.log += `spawn failed: ${e.message}\n`));
    // "Cloister VERSION listening on http://ADDRESS (platform: ...)", once it has bound.
    const address = await new Promise((resolve, reject) => {
      let out = '';
      const onData = (d) => {
        out += d;
        const found = /listening on http:\/\/(\S+)/.exec(out);
        if (found) {
          proc.stdout.off('data', onData);
          resolve(found[1]);
        }
      };
      proc.stdout.on('data', onData);
      this.exited.then(([code]) => reject(new Error(`the runtime exited (${code}) before it listened:\n${this.log}`)), reject);
    });
    if (this.address && address !== this.address) throw new Error(`the runtime listens on ${address}, not on ${this.address}`);
    this.address = address;
    this.port = Number(new URL(`http://${address}`).port);
    this.url = `http://${address}`;
    await waitFor('the runtime to be ready', async () => {
      if (proc.exitCode !== null) throw new Error(`the runtime exited (${proc.exitCode}):\n${this.log}`);
      const response = await fetch(`${this.url}/readyz`);
      return response.status === 200;
    });
  }

  /** Stops the process (SIGKILL by default: the runtime dies under the page) and waits for it. */
  async stop(signal = 'SIGKILL') {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill(signal);
    await this.exited;
  }

  async api(path, { method = 'GET', body, headers = {} } = {}) {
    const response = await fetch(`${this.url}${path}`, {
      method,
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      headers: { Authorization: `Bearer ${TOKEN}`, ...(body !== undefined && typeof body !== 'string' ? { 'Content-Type': 'application/json' } : {}), ...headers },
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  async cleanup() {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * Where the browser loads the page: the runtime itself, or, with CLOISTER_DASHBOARD_ASSETS=DIR, a
 * small proxy that serves the page from DIR (e.g. a fresh `node build.mjs DIR`) and passes
 * everything else to the runtime. The proxy is for working on the page without rebuilding the
 * binary; CI uses the runtime.
 */
export async function pageOrigin(runtime) {
  const assets = process.env.CLOISTER_DASHBOARD_ASSETS;
  if (!assets) return { url: runtime.url, close: async () => {} };
  const csp = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
  const files = { '/': ['index.html', 'text/html'], '/assets/app.js': ['app.js', 'text/javascript'], '/assets/app.css': ['app.css', 'text/css'] };
  const sockets = new Set();
  const server = createServer(async (req, res) => {
    const file = files[req.url];
    if (file && req.method === 'GET') {
      res.writeHead(200, { 'content-type': `${file[1]}; charset=utf-8`, 'content-security-policy': csp, 'cache-control': 'no-cache' });
      res.end(await readFile(join(assets, file[0])));
      return;
    }
    const upstream = httpRequest({ host: '127.0.0.1', port: runtime.port, path: req.url, method: req.method, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res);
      up.on('error', () => res.destroy());
      up.on('aborted', () => res.destroy());
    });
    upstream.on('error', () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
    req.pipe(upstream);
    res.on('close', () => upstream.destroy());
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

export async function launchBrowser() {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  await access(executablePath, fs.X_OK).catch(() => {
    throw new Error(`no Chromium at ${executablePath}: run dashboard/install-browser.sh (or set CHROMIUM)`);
  });
  const { chromium } = await import('playwright-core').catch(() => {
    throw new Error('playwright-core is not installed: run dashboard/install-browser.sh');
  });
  return chromium.launch({ executablePath, args: CHROMIUM_ARGS });
}

/** A page that records uncaught errors and console errors (network refusals aside), and every URL it requests. */
export async function openPage(browser, { width = 1440, height = 1000 } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  const problems = [];
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('websocket', (w) => requests.push(w.url()));
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // The browser itself logs refused connections and 401s; those are expected in these tests.
    if (m.type() === 'error' && !/Failed to load resource|net::ERR_/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  return { page, context, problems, requests };
}

/** Every URL in `requests` is on `origin` (inline data: URLs aside). */
export function assertSameOrigin(requests, origin) {
  const own = new URL(origin).origin;
  const elsewhere = requests.filter((url) => !url.startsWith('data:') && new URL(url).origin !== own);
  if (requests.length === 0) throw new Error('no request was recorded');
  if (elsewhere.length > 0) throw new Error(`the page loaded from another origin than ${own}: ${elsewhere.join(', ')}`);
}

export async function signIn(page, token = TOKEN) {
  await page.getByTestId('token-input').fill(token);
  await page.getByTestId('signin-submit').click();
}
