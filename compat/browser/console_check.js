#!/usr/bin/env node
/*
 * Drives nacre's web console in a real browser (Debian's chromium, headless, through
 * playwright-core) the way an operator uses it, and checks each step's effect with the real
 * legacy Node client (npm `nacos`, from compat/node) or the HTTP API.
 *
 *   node console_check.js --gateway http://127.0.0.1:8848 [--shots DIR] [--only a,b]
 *                         [--kill-pid PID --kill-addr HOST:PORT] [--username U --password P]
 *
 * Prints `PASS name` / `FAIL name: reason` per scenario, then `console: N passed, M failed`,
 * and exits non-zero on any failure. Scenarios run in order (they share one browser page):
 *   services   find a service, open it
 *   drain      take an instance offline (the legacy client's list drops it), bring it back
 *   edit       change an instance's weight and metadata; filter by metadata; batch offline/online
 *   namespace  create a namespace and switch to it
 *   configs    publish, edit with a reviewed diff, read the history, roll back
 *   cluster    read the cluster page, kill -9 a node (--kill-pid), see it reported down
 *   login      (auth on) the console asks for a user, refuses a wrong password, logs in
 * Screenshots of each page go to --shots (docs/console.md shows them).
 */
'use strict';

const path = require('path');
const fs = require('fs');

const CLIENT_IP = '127.0.0.1';
const compatNode = path.join(__dirname, '..', 'node', 'node_modules');
const address = require(path.join(compatNode, 'address'));
address.ip = () => CLIENT_IP;
const { NacosNamingClient, NacosConfigClient } = require(path.join(compatNode, 'nacos'));
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.NACRE_CHROMIUM || '/usr/bin/chromium';
const SERVICE = `console-orders-${process.pid}`;
const GROUP = 'DEFAULT_GROUP';
const PORTS = [18001, 18002, 18003];
const ALL = ['services', 'drain', 'edit', 'namespace', 'configs', 'cluster'];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function parseArgs(argv) {
  const o = { only: null };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    switch (k) {
      case '--gateway': o.gateway = v; i++; break;
      case '--shots': o.shots = v; i++; break;
      case '--only': o.only = v.split(','); i++; break;
      case '--kill-pid': o.killPid = Number(v); i++; break;
      case '--kill-addr': o.killAddr = v; i++; break;
      case '--username': o.username = v; i++; break;
      case '--password': o.password = v; i++; break;
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  if (!o.gateway) throw new Error('--gateway is required');
  o.server = new URL(o.gateway).host;
  return o;
}

class CheckFailed extends Error {}
function expect(cond, reason) {
  if (!cond) throw new CheckFailed(reason);
}

/** Polls `fn` until it returns a truthy value; fails with `what` after `ms`. */
async function eventually(what, fn, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new CheckFailed(`${what} (not within ${ms} ms${last ? `; last error: ${last.message}` : ''})`);
    await sleep(200);
  }
}

const quietLogger = { info() {}, warn() {}, debug() {}, error() {}, log() {} };

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const scenarios = opts.only || ALL;
  if (opts.shots) fs.mkdirSync(opts.shots, { recursive: true });
  const results = [];
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  const shot = async (name) => {
    if (opts.shots) await page.screenshot({ path: path.join(opts.shots, `${name}.png`), fullPage: true });
  };
  // A fresh load each time: a hash-only navigation would leave the previous page's DOM in
  // place until the new one is drawn, and a step could act on it.
  const open = async (hash) => {
    await page.goto('about:blank');
    await page.goto(`${opts.gateway}/nacos/#/${hash}`);
    await page.waitForFunction(() => !/Loading/.test(document.querySelector('main').textContent));
  };
  const ctx = { opts, page, shot, open, clients: [] };

  const runs = {
    services, drain, edit, namespace, configs, cluster, login,
  };
  try {
    if (scenarios.some((s) => ['services', 'drain', 'edit'].includes(s))) await registerFleet(ctx);
    for (const name of scenarios) {
      const before = pageErrors.length;
      try {
        await runs[name](ctx);
        expect(pageErrors.length === before, `script errors on the page: ${pageErrors.slice(before).join('; ')}`);
        results.push(true);
        console.log(`PASS ${name}`);
      } catch (e) {
        results.push(false);
        console.log(`FAIL ${name}: ${String(e.message || e).replace(/\s*\n\s*/g, ' | ')}`);
        await shot(`failed-${name}`).catch(() => {});
      }
    }
  } finally {
    for (const c of ctx.clients) await c.close().catch(() => {});
    await browser.close();
  }
  const failed = results.filter((ok) => !ok).length;
  console.log(`console: ${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

// ---------------------------------------------------------------- helpers on the legacy client

async function naming(ctx) {
  const { opts } = ctx;
  const options = { logger: quietLogger, serverList: opts.server };
  if (opts.username) Object.assign(options, { username: opts.username, password: opts.password });
  const client = new NacosNamingClient(options);
  client.on('error', () => {});
  await client.ready();
  ctx.clients.push(client);
  return client;
}

/** Three instances registered (and kept beating) by the legacy client itself. */
async function registerFleet(ctx) {
  const client = await naming(ctx);
  ctx.naming = client;
  for (const port of PORTS) {
    await client.registerInstance(SERVICE, { ip: CLIENT_IP, port, metadata: { zone: 'a' } }, GROUP);
  }
  await eventually('the legacy client lists the 3 instances', async () => (await listed(ctx)).length === 3);
}

/** What the legacy client's list returns for the service (enabled, healthy instances). */
async function listed(ctx) {
  const hosts = await ctx.naming.getAllInstances(SERVICE, GROUP, [], false);
  return hosts.filter((h) => h.enabled !== false);
}

/** Waits for an action's confirmation: the page shows it after it has redrawn. */
async function confirmed(page, text) {
  await page.waitForFunction((t) => document.querySelector('[data-t=flash]').textContent.includes(t), text);
}

function row(port) {
  return `table[data-t=instances] tr[data-instance="${CLIENT_IP}:${port}"]`;
}

// ---------------------------------------------------------------- scenarios

async function services(ctx) {
  const { page } = ctx;
  await ctx.open('services');
  await page.fill('[data-t=svc-filter]', SERVICE);
  await page.click('[data-t=search]');
  const r = page.locator(`table[data-t=services] tr[data-service="${SERVICE}"]`);
  await r.waitFor();
  const cells = await r.locator('td').allTextContents();
  expect(cells[3] === '3' && cells[4] === '3', `instances / healthy cells: ${cells}`);
  expect(/^127\.0\.0\.1:\d+$/.test(cells[6]), `owner cell: ${cells[6]}`);
  await ctx.shot('services');
  await r.locator('a').click();
  await eventually('the detail page shows 3 instances', async () => (await page.locator('table[data-t=instances] tr[data-instance]').count()) === 3);
  await ctx.shot('service');
}

async function openService(ctx) {
  await ctx.open(`service?name=${SERVICE}&group=${GROUP}`);
  await ctx.page.locator(row(PORTS[0])).waitFor();
}

async function drain(ctx) {
  const { page } = ctx;
  await openService(ctx);
  await page.click(`${row(PORTS[0])} button[data-t=offline]`);
  await confirmed(page, 'offline');
  await page.locator(`${row(PORTS[0])}.offline`).waitFor();
  await ctx.shot('drain');
  await eventually('the legacy client stops returning the drained instance',
    async () => !(await listed(ctx)).some((h) => h.port === PORTS[0]), 30000);
  await page.click(`${row(PORTS[0])} button[data-t=online]`);
  await confirmed(page, 'online');
  await page.locator(`${row(PORTS[0])}:not(.offline)`).waitFor();
  await eventually('the legacy client returns the instance again',
    async () => (await listed(ctx)).some((h) => h.port === PORTS[0]), 30000);
}

async function edit(ctx) {
  const { page } = ctx;
  await openService(ctx);
  await page.click(`${row(PORTS[1])} button[data-t=edit]`);
  await page.fill('[data-t=edit-weight]', '3.5');
  await page.fill('[data-t=edit-metadata]', '{"zone": "b", "version": "2"}');
  await ctx.shot('edit');
  await page.click('[data-t=edit-save]');
  await confirmed(page, 'saved');
  await eventually('the legacy client sees weight 3.5 and version=2', async () => {
    const h = (await listed(ctx)).find((x) => x.port === PORTS[1]);
    return h && h.weight === 3.5 && h.metadata && h.metadata.version === '2' && h.metadata.zone === 'b';
  }, 30000);
  // The metadata filter narrows the table to the edited instance.
  await page.fill('[data-t=meta-filter]', 'version=2');
  await eventually('the filter shows one instance', async () => (await page.locator('table[data-t=instances] tr[data-instance]').count()) === 1);
  await page.fill('[data-t=meta-filter]', '');
  // Batch: two instances offline at once, then online.
  for (const p of [PORTS[0], PORTS[2]]) await page.check(`${row(p)} [data-t=select]`);
  await page.click('[data-t=batch-offline]');
  await confirmed(page, 'Instances offline');
  await page.locator(`${row(PORTS[2])}.offline`).waitFor();
  await eventually('the legacy client lists only the unselected instance', async () => {
    const ports = (await listed(ctx)).map((h) => h.port);
    return ports.length === 1 && ports[0] === PORTS[1];
  }, 30000);
  for (const p of [PORTS[0], PORTS[2]]) await page.check(`${row(p)} [data-t=select]`);
  await page.click('[data-t=batch-online]');
  await confirmed(page, 'Instances online');
  await eventually('the legacy client lists all three again', async () => (await listed(ctx)).length === 3, 30000);
}

async function namespace(ctx) {
  const { page } = ctx;
  const id = `console-ns-${process.pid}`;
  await ctx.open('namespaces');
  await page.fill('[data-t=new-ns-id]', id);
  await page.fill('[data-t=new-ns-name]', 'Console test');
  await page.fill('[data-t=new-ns-desc]', 'made in the browser');
  await page.click('[data-t=ns-create]');
  await page.locator(`tr[data-ns="${id}"]`).waitFor();
  const res = await fetch(`${ctx.opts.gateway}/nacos/v1/console/namespaces`, { headers: await authHeader(ctx) });
  const listed = (await res.json()).data.map((n) => n.namespace);
  expect(listed.includes(id), `the API lists ${listed}`);
  await ctx.shot('namespaces');
  // Switching to it shows its (empty) service list; the choice is kept across pages.
  await page.selectOption('[data-t=namespace]', id);
  try {
    await ctx.open('services');
    await eventually('the services page of the new namespace', async () => /Console test/.test(await page.textContent('h1')));
    expect((await page.locator('table[data-t=services] tbody tr').count()) === 0, 'a new namespace has no services');
  } finally {
    await page.selectOption('[data-t=namespace]', '');
  }
}

async function authHeader(ctx) {
  const token = await ctx.page.evaluate(() => sessionStorage.getItem('nacre.token'));
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function configs(ctx) {
  const { page, opts } = ctx;
  const dataId = `console-${process.pid}.yaml`;
  const v1 = 'server:\n  port: 8080\nfeature: off\n名前: 一';
  const v2 = 'server:\n  port: 9090\nfeature: off\n名前: 一';
  await ctx.open('config?create=true');
  await page.fill('[data-t=cfg-dataid]', dataId);
  await page.selectOption('[data-t=cfg-type]', 'yaml');
  await page.fill('[data-t=cfg-content]', v1);
  await page.click('[data-t=cfg-publish]');
  await eventually('the config page shows the published md5', async () => /md5 [0-9a-f]{32}/.test(await page.textContent('main')));
  // Edit with a reviewed diff.
  await page.fill('[data-t=cfg-content]', v2);
  await page.click('[data-t=cfg-review]');
  const diff = await page.textContent('[data-t=diff]');
  expect(diff.includes('-   port: 8080') && diff.includes('+   port: 9090') && !diff.includes('- feature'), `diff: ${diff}`);
  await ctx.shot('config-edit');
  await page.click('[data-t=cfg-publish]');
  const cfg = new NacosConfigClient({ serverAddr: opts.server, ...(opts.username ? { username: opts.username, password: opts.password } : {}) });
  ctx.clients.push(cfg);
  await eventually('the legacy config client reads v2', async () => (await cfg.getConfig(dataId, 'DEFAULT_GROUP')) === v2);
  // The legacy client listening: the config page lists it, holding the current md5.
  cfg.subscribe({ dataId, group: 'DEFAULT_GROUP' }, () => {});
  await eventually('the config page lists the listening client', async () => {
    await ctx.open(`config?dataId=${encodeURIComponent(dataId)}&group=DEFAULT_GROUP`);
    const rows = await page.locator('table[data-t=listeners] tr[data-listener]').allTextContents();
    return rows.some((r) => r.includes('127.0.0.1') && r.includes('up to date'));
  }, 30000);
  await ctx.shot('config-listeners');
  // History: two versions, newest first; roll back to the first.
  await ctx.open(`history?dataId=${encodeURIComponent(dataId)}&group=DEFAULT_GROUP`);
  await eventually('two versions in the history', async () => (await page.locator('table[data-t=history] tbody tr').count()) === 2);
  await page.locator('table[data-t=history] tbody tr').nth(1).locator('[data-t=view]').click();
  await page.locator('[data-t=rollback]').waitFor();
  await ctx.shot('config-history');
  await page.click('[data-t=rollback]');
  await eventually('the editor holds the old version', async () => (await page.inputValue('[data-t=cfg-content]')) === v1);
  const back = await page.textContent('[data-t=diff]');
  expect(back.includes('+   port: 8080'), `rollback diff: ${back}`);
  await page.click('[data-t=cfg-publish]');
  await eventually('the legacy config client reads v1 again', async () => (await cfg.getConfig(dataId, 'DEFAULT_GROUP')) === v1);
}

async function cluster(ctx) {
  const { page, opts } = ctx;
  await ctx.open('cluster');
  await eventually('three members UP', async () => {
    const states = await page.locator('table[data-t=members] tr[data-member] td:nth-child(2)').allTextContents();
    return states.length === 3 && states.every((s) => s === 'UP');
  });
  const role = await page.textContent('[data-t=raft-role] .big');
  expect(/leader|follower/i.test(role), `Raft role card: ${role}`);
  // Through the gateway, every node's own view: one leader, the same term everywhere.
  await eventually('every node shows its Raft role', async () => {
    const rows = await page.locator('table[data-t=node-views] tr[data-node-view]').allTextContents();
    return rows.length === 3 && rows.filter((r) => /Leader/.test(r)).length === 1;
  });
  await ctx.shot('cluster');
  if (!opts.killPid) return;
  process.kill(opts.killPid, 'SIGKILL');
  // The page refreshes itself: the killed member leaves the gateway's rotation and its peers
  // stop seeing it UP.
  // Read in one go: the page redraws itself every 2 s, and a row found a moment ago may be
  // gone by the next call.
  const cell = (selector, n) => page.evaluate(([sel, i]) => {
    const r = document.querySelector(sel);
    return r ? r.children[i].textContent : null;
  }, [selector, n]);
  await eventually('the gateway takes the killed node out of rotation', async () => {
    const t = await cell(`tr[data-gateway-node="${opts.killAddr}"]`, 2);
    return t === null || t === 'no';
  }, 30000);
  await eventually('the members table reports the killed node not UP', async () => {
    const t = await cell(`tr[data-member="${opts.killAddr}"]`, 1);
    return t !== null && t !== 'UP';
  }, 30000);
  await ctx.shot('cluster-node-killed');
}

async function login(ctx) {
  const { page, opts } = ctx;
  await page.goto(`${opts.gateway}/nacos/#/services`);
  await page.locator('[data-t=username]').waitFor();
  await page.fill('[data-t=username]', opts.username);
  await page.fill('[data-t=password]', `${opts.password}-wrong`);
  await page.click('[data-t=login]');
  await eventually('a wrong password is refused', async () => /403/.test(await page.textContent('[data-t=flash]')));
  expect(await page.locator('[data-t=username]').isVisible(), 'still on the login page');
  await ctx.shot('login');
  await page.fill('[data-t=password]', opts.password);
  await page.click('[data-t=login]');
  await page.locator('table[data-t=services]').waitFor();
  expect((await page.textContent('#who')).includes(opts.username), 'the header names the user');
  // A page reached after login calls the APIs with the token.
  await ctx.open('namespaces');
  await page.locator('table[data-t=namespaces]').waitFor();
  await page.click('[data-t=logout]');
  await page.locator('[data-t=username]').waitFor();
}

main().catch((e) => {
  console.log(`FAIL driver: ${e.stack || e}`);
  process.exit(1);
});
