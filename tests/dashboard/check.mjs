#!/usr/bin/env node
// Drives the rpcgate admin dashboard in headless Chromium (Debian's `chromium`,
// never a browser downloaded by playwright) and reports what it sees.
//
//   node tests/dashboard/check.mjs --url http://127.0.0.1:PORT/ \
//        --expect-endpoints A,B,C [--screenshot out.png] [--timeout-ms 20000]
//
// 1. Opens the URL and waits until every address in --expect-endpoints has a
//    row <tr data-endpoint=ADDRESS data-health="up">; then prints `READY`.
// 2. Reads commands from stdin, one a line, in order:
//      DOWN <address> [cluster]   wait for that row to show data-health="down",
//                                 print `SAW DOWN <address> <ms waited>`
//      UP <address> [cluster]     the same for "up"      (`SAW UP ...`)
//      WARMING <address> [cluster] the same for "warming" (`SAW WARMING ...`)
//      SCREENSHOT <path>          full-page screenshot, print `SCREENSHOT DONE`
//      END (or stdin closed)      finish
// 3. At the end: any console error/warning, uncaught page error, failed
//    request or HTTP error answer seen during the run fails the check.
//    With --screenshot, a full-page screenshot is taken at the end (also when
//    the check fails, to help see why).
// Exit 0 when all is well, 1 with the reasons on stderr otherwise. Every wait
// is bounded by --timeout-ms; the whole run by --max-run-ms (default 10 min).

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

function usage(msg) {
  if (msg) process.stderr.write(`check.mjs: ${msg}\n`);
  process.stderr.write(
    'usage: node check.mjs --url URL --expect-endpoints A,B,C [--screenshot out.png] [--timeout-ms 20000] [--max-run-ms 600000]\n',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { url: null, expect: [], screenshot: null, timeoutMs: 20000, maxRunMs: 600000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const name = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    const value = () => {
      if (a.startsWith('--') && eq > 0) return a.slice(eq + 1);
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    switch (name) {
      case '--url': opts.url = value(); break;
      case '--expect-endpoints':
        opts.expect = value().split(',').map((s) => s.trim()).filter(Boolean);
        break;
      case '--screenshot': opts.screenshot = value(); break;
      case '--timeout-ms': opts.timeoutMs = Number(value()); break;
      case '--max-run-ms': opts.maxRunMs = Number(value()); break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (!opts.url) usage('--url is required');
  if (!Number.isFinite(opts.timeoutMs) || opts.timeoutMs <= 0) usage('--timeout-ms must be a positive number');
  if (!Number.isFinite(opts.maxRunMs) || opts.maxRunMs <= 0) usage('--max-run-ms must be a positive number');
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
// Console errors/warnings, page errors, failed requests: text -> times seen.
const problems = new Map();
function problem(text) { problems.set(text, (problems.get(text) || 0) + 1); }
let browser = null;
let page = null;
let finishing = false;

function out(line) { process.stdout.write(line + '\n'); }
function log(line) { process.stderr.write(`check.mjs: ${line}\n`); }

// Bounds a promise that has no timeout of its own.
function bounded(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

async function finish(failure) {
  if (finishing) return;
  finishing = true;
  let code = 0;
  // eslint-disable-next-line no-control-regex
  if (failure) { log(`FAILED: ${String(failure).replace(/\x1b\[[0-9;]*m/g, '')}`); code = 1; }
  if (page && opts.screenshot) {
    try {
      await page.screenshot({ path: opts.screenshot, fullPage: true, timeout: opts.timeoutMs });
      log(`screenshot written to ${opts.screenshot}`);
    } catch (e) {
      log(`could not take the final screenshot: ${e.message}`);
      code = 1;
    }
  }
  if (page) {
    try {
      const renderError = await bounded(page.evaluate(() => {
        const e = document.getElementById('render-error');
        return e ? e.textContent : '';
      }), 5000, 'reading #render-error');
      if (renderError) problem(`page shows a render error: ${renderError}`);
    } catch (e) { /* the page may be gone; what matters was recorded */ }
  }
  if (problems.size) {
    let total = 0;
    for (const n of problems.values()) total += n;
    log(`${total} console/page/request problem(s):`);
    for (const [text, n] of problems) log(`  ${n > 1 ? `${n}x ` : ''}${text}`);
    code = 1;
  }
  if (browser) {
    try { await bounded(browser.close(), 10000, 'closing the browser'); } catch (e) { log(e.message); }
  }
  process.exit(code);
}

const runGuard = setTimeout(() => { finish(`the whole run took longer than ${opts.maxRunMs} ms`); }, opts.maxRunMs);
runGuard.unref();
process.on('SIGTERM', () => finish('terminated (SIGTERM)'));
process.on('SIGINT', () => finish('interrupted (SIGINT)'));
process.on('unhandledRejection', (e) => finish(`internal error: ${e && e.stack ? e.stack : e}`));

// What the page shows about the rows, for messages when a wait times out.
async function describePage() {
  try {
    return await bounded(page.evaluate(() => {
      const rows = Array.from(document.querySelectorAll('tr[data-endpoint]'))
        .map((tr) => `${tr.dataset.cluster}/${tr.dataset.endpoint}=${tr.dataset.health}`);
      const conn = document.getElementById('conn-state');
      const detail = document.getElementById('conn-detail');
      return `conn-state=${conn ? conn.textContent : '?'} (${detail ? detail.textContent : ''}); rows: ${rows.join(', ') || 'none'}`;
    }), 5000, 'describing the page');
  } catch (e) {
    return `(could not read the page: ${e.message})`;
  }
}

// Waits until, for each address, some row (in `cluster`, if given) has the wanted health.
async function waitForHealth(addresses, health, cluster) {
  const t0 = Date.now();
  try {
    await page.waitForFunction(({ addresses, health, cluster }) => {
      const rows = Array.from(document.querySelectorAll('tr[data-endpoint]'));
      return addresses.every((a) => rows.some((tr) =>
        tr.dataset.endpoint === a && tr.dataset.health === health && (!cluster || tr.dataset.cluster === cluster)));
    }, { addresses, health, cluster: cluster || null }, { timeout: opts.timeoutMs, polling: 100 });
  } catch (e) {
    const what = `${addresses.join(',')}${cluster ? ` in cluster ${cluster}` : ''} to be ${health}`;
    throw new Error(`timed out after ${Date.now() - t0} ms waiting for ${what}; ${await describePage()}`);
  }
  return Date.now() - t0;
}

async function main() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: Math.max(opts.timeoutMs, 30000),
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
  page = await context.newPage();
  page.setDefaultTimeout(opts.timeoutMs);

  page.on('console', (msg) => {
    const type = msg.type();
    if (type === 'error' || type === 'warning') {
      const loc = msg.location();
      problem(`console ${type}: ${msg.text()}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ''}`);
    }
  });
  page.on('pageerror', (err) => problem(`page error: ${err.stack || err.message || err}`));
  page.on('requestfailed', (req) => {
    const f = req.failure();
    problem(`request failed: ${req.method()} ${req.url()} ${f ? f.errorText : ''}`);
  });
  page.on('response', (resp) => {
    if (resp.status() >= 400) problem(`HTTP ${resp.status()} for ${resp.request().method()} ${resp.url()}`);
  });
  page.on('crash', () => problem('the page crashed'));

  const resp = await page.goto(opts.url, { waitUntil: 'load', timeout: opts.timeoutMs });
  if (!resp) throw new Error(`no answer for ${opts.url}`);
  if (!resp.ok()) throw new Error(`GET ${opts.url} answered ${resp.status()}`);

  if (opts.expect.length) await waitForHealth(opts.expect, 'up');
  else await page.waitForSelector('#conn-state[data-state="live"]', { timeout: opts.timeoutMs });
  out('READY');

  const rl = createInterface({ input: process.stdin, terminal: false });
  for await (const raw of rl) {
    const line = raw.trim();
    if (!line) continue;
    const [cmd, ...rest] = line.split(/\s+/);
    switch (cmd.toUpperCase()) {
      case 'DOWN': case 'UP': case 'WARMING': {
        const [address, cluster] = rest;
        if (!address) throw new Error(`${cmd} needs an address`);
        const ms = await waitForHealth([address], cmd.toLowerCase(), cluster);
        out(`SAW ${cmd.toUpperCase()} ${address} ${ms}`);
        break;
      }
      case 'SCREENSHOT': {
        const path = rest.join(' ');
        if (!path) throw new Error('SCREENSHOT needs a path');
        await page.screenshot({ path, fullPage: true, timeout: opts.timeoutMs });
        out('SCREENSHOT DONE');
        break;
      }
      case 'END':
        rl.close();
        return;
      default:
        throw new Error(`unknown command: ${line}`);
    }
  }
}

main().then(() => finish(null), (e) => finish(e && e.message ? e.message : String(e)));
