#!/usr/bin/env node
/*
 * Drive the real legacy Node.js Nacos client (npm `nacos` 2.x -> `nacos-naming`) against a
 * nacre server.
 *
 *   node check_legacy.js --servers 127.0.0.1:8848 [--dead-server 127.0.0.1:1] [--only a,b] [--list] [--verbose]
 *                        [--username U --password P]
 *
 * Prints one line per check, `PASS name` or `FAIL name: reason`, then a summary line
 * `node-legacy: N passed, M failed`, and exits non-zero if any check failed.
 *
 * Scenarios use unique service names and run concurrently (wall time is dominated by the
 * beat-expiry scenario, about 50 s). Only public client methods are used: NacosNamingClient's
 * registerInstance, deregisterInstance, getAllInstances, selectInstances, subscribe,
 * getServerStatus, close; NacosConfigClient's publishSingle, getConfig, remove, subscribe,
 * close.
 */
'use strict';

// nacos-naming reports `clientIP` = require('address').ip() (the first ethN address, evaluated
// when proxy.js is loaded) in list queries, and the server pushes UDP to clientIP:udpPort.
// Tests only talk to loopback, so pin it before the client is loaded. The push receiver binds
// 0.0.0.0, so loopback pushes reach it.
const CLIENT_IP = process.env.NACRE_COMPAT_CLIENT_IP || '127.0.0.1';
const address = require('address');
address.ip = () => CLIENT_IP;

const net = require('net');
const util = require('util');
const crypto = require('crypto');
const { NacosNamingClient, NacosConfigClient } = require('nacos');

const IP = '127.0.0.1';
const UNHEALTHY_WITHIN = 25;
const UNHEALTHY_NOT_BEFORE = 10;
const GONE_WITHIN = 45;
const GONE_NOT_BEFORE = 25;

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
const results = [];
const clients = [];
let opts;

class CheckFailed extends Error {}

function expect(cond, reason) {
  if (!cond) throw new CheckFailed(reason);
}

function report(name, ok, reason) {
  results.push({ name, ok, reason });
  if (ok) console.log(`PASS ${name}`);
  else console.log(`FAIL ${name}: ${String(reason).replace(/\s*\n\s*/g, ' | ')}`);
}

async function check(name, fn) {
  try {
    await fn();
    report(name, true);
    return true;
  } catch (err) {
    report(name, false, err instanceof CheckFailed ? err.message : `${err.name}: ${err.message}`);
    return false;
  }
}

function uniq(prefix) {
  return `node-${prefix}-${crypto.randomBytes(4).toString('hex')}`;
}

let nextPort = 40000 + (process.pid % 1000) * 20;
function fakePort() {
  // a port number used only as instance data (never contacted by this driver)
  nextPort += 1;
  return nextPort;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, IP, () => {
      const port = srv.address().port;
      srv.close(() => resolve(port));
    });
  });
}

// The client insists on a logger; keep its lines (for push detection and --verbose).
class Logger {
  constructor(name) {
    this.name = name;
    this.lines = [];
    this.pushes = [];
  }
  _log(level, args) {
    const line = util.format(...args);
    if (this.lines.length < 2000) this.lines.push(`${level} ${line}`);
    if (typeof args[0] === 'string' && args[0].startsWith('[PushReceiver] received push data')) {
      // args[1] is the decoded packet: {"type":"dom","data":"<service info JSON string>",...}
      let hostPorts = [];
      try {
        const data = JSON.parse(JSON.parse(args[1]).data);
        hostPorts = (data.hosts || []).map(h => h.port);
      } catch (_) { /* unparsable push: the client reports it itself */ }
      this.pushes.push({ at: Date.now(), line, hostPorts });
    }
    if (opts && opts.verbose) process.stderr.write(`[${this.name}] ${level} ${line}\n`);
  }
  debug(...a) { this._log('DEBUG', a); }
  info(...a) { this._log('INFO', a); }
  warn(...a) { this._log('WARN', a); }
  error(...a) { this._log('ERROR', a); }
}

// `auth`: the driver's credentials when absent, none when null, else {username, password}.
async function newClient(name, { namespace, serverList, auth } = {}) {
  const logger = new Logger(name);
  // Endpoint mode: the client learns its servers from the address server only (scenarios that
  // need an explicit list still pass one).
  const options = serverList || !opts.endpoint
    ? { logger, serverList: serverList || opts.servers }
    : { logger, endpoint: opts.endpoint };
  if (namespace) options.namespace = namespace;
  // With auth on, the client sends the user name and password with every request.
  const creds = auth === undefined
    ? (opts.username ? { username: opts.username, password: opts.password } : null)
    : auth;
  if (creds) {
    options.username = creds.username;
    options.password = creds.password;
  }
  const client = new NacosNamingClient(options);
  client.on('error', err => logger.error('client error: %s', err && err.message));
  await client.ready();
  client.testLogger = logger;
  clients.push(client);
  return client;
}

// A config client: the driver's servers (or endpoint), credentials and an optional namespace.
async function newConfigClient({ namespace, serverAddr } = {}) {
  const options = serverAddr || !opts.endpoint
    ? { serverAddr: serverAddr || opts.servers }
    : { endpoint: opts.endpoint };
  if (namespace) options.namespace = namespace;
  if (opts.username) {
    options.username = opts.username;
    options.password = opts.password;
  }
  options.requestTimeout = 6000;
  options.cacheDir = require('os').tmpdir() + '/nacre-compat-node-config-' + process.pid;
  // NacosConfigClient shares one real client per `DiamondClient@<endpoint>` name through
  // cluster-client, across every instance in the process and across processes on the machine
  // (a leader on a local port). Without an endpoint every client would share one, whatever its
  // servers and namespace: the suites that run at once against different servers would talk
  // to each other's. A name per target and namespace, and a leader port of this process's
  // own, keep them apart.
  const name = `nacre-compat@${options.serverAddr || options.endpoint}@${namespace || ''}`;
  options.cluster = (DataClient, clusterOptions) =>
    require('cluster-client')(DataClient, Object.assign({}, clusterOptions, { name, port: opts.clusterPort }));
  const client = new NacosConfigClient(options);
  client.on('error', () => {});
  await client.ready();
  clients.push(client);
  return client;
}

// Waits up to `ms` for `cond()` to hold.
async function waitFor(cond, ms, what) {
  const until = Date.now() + ms;
  while (!cond()) {
    expect(Date.now() < until, `timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function closeClient(client) {
  try {
    await client.close();
  } catch (_) { /* ignore */ }
}

// A list straight from the server (subscribe=false), as a plain array of hosts.
async function list(client, svc, group = 'DEFAULT_GROUP', clusters = '') {
  const hosts = await client.getAllInstances(svc, group, clusters, false);
  expect(Array.isArray(hosts), `getAllInstances returned ${JSON.stringify(hosts)}`);
  return hosts;
}

// The client keeps its cached list when the server answers with an empty one (like the Java
// client), so "is it gone" questions are asked through a throw-away client without a cache.
async function freshList(svc, group = 'DEFAULT_GROUP', clusters = '', namespace) {
  const c = await newClient('fresh', { namespace });
  try {
    return await list(c, svc, group, clusters);
  } finally {
    await closeClient(c);
  }
}

const ports = hosts => hosts.map(h => h.port).sort((a, b) => a - b);
const find = (hosts, port, ip = IP) => hosts.find(h => h.ip === ip && h.port === port);
const sortNum = arr => arr.slice().sort((a, b) => a - b);
const same = (a, b) => JSON.stringify(sortNum(a)) === JSON.stringify(sortNum(b));

// --------------------------------------------------------------------------------------------
// scenarios

async function scRegister() {
  const c = await newClient('register');
  const svc = uniq('reg');
  const port = fakePort();
  const metadata = { version: '1.2.3', zone: 'z-1' };
  if (!await check('node.register', async () => {
    await c.registerInstance(svc, { ip: IP, port, weight: 2.5, metadata, clusterName: 'c-a' });
  })) return;
  await check('node.register.list_fields', async () => {
    const hosts = await list(c, svc);
    expect(hosts.length === 1, `expected 1 host, got ${JSON.stringify(hosts)}`);
    const h = hosts[0];
    expect(h.ip === IP, `ip ${h.ip}`);
    expect(h.port === port, `port ${h.port} != ${port}`);
    expect(h.weight === 2.5, `weight ${h.weight} != 2.5`);
    expect(util.isDeepStrictEqual(h.metadata, metadata), `metadata ${JSON.stringify(h.metadata)}`);
    expect(h.clusterName === 'c-a', `clusterName ${h.clusterName}`);
    expect(h.healthy === true, `healthy ${h.healthy}`);
    expect(h.enabled === true, `enabled ${h.enabled}`);
    expect(h.ephemeral === true, `ephemeral ${h.ephemeral}`);
    const wantId = `${IP}#${port}#c-a#DEFAULT_GROUP@@${svc}`;
    expect(h.instanceId === wantId, `instanceId ${h.instanceId} != ${wantId}`);
    // Node identifies as Nacos-Java-Client:v1.0.0, so host serviceName is the grouped name.
    expect(h.serviceName === `DEFAULT_GROUP@@${svc}`, `serviceName ${h.serviceName} (want grouped)`);
  });
  await check('node.server_status', async () => {
    const st = await c.getServerStatus();
    expect(st === 'UP', `getServerStatus() = ${st} (GET /nacos/v1/ns/operator/metrics must say status UP)`);
  });
  await c.deregisterInstance(svc, { ip: IP, port, clusterName: 'c-a' });
}

async function scSelectHealthy() {
  const c = await newClient('select');
  const ctl = await newClient('select-ctl');
  const svc = uniq('sel');
  const pOk = fakePort();
  const pBad = fakePort();
  await check('node.select_instances.healthy_filter', async () => {
    await c.registerInstance(svc, { ip: IP, port: pOk, clusterName: 'c1' });
    // registered unhealthy from a client that stops beating at once (a beat would revive it)
    await ctl.registerInstance(svc, { ip: IP, port: pBad, clusterName: 'c1', healthy: false });
    await closeClient(ctl);
    const all = await list(c, svc);
    expect(same(ports(all), [pOk, pBad]), `getAllInstances ports ${ports(all)}`);
    expect(find(all, pBad).healthy === false, `instance registered healthy=false listed healthy=${find(all, pBad).healthy}`);
    const healthy = await c.selectInstances(svc, 'DEFAULT_GROUP', '', true, false);
    expect(same(ports(healthy), [pOk]), `selectInstances(healthy=true) ports ${ports(healthy)}`);
    const unhealthy = await c.selectInstances(svc, 'DEFAULT_GROUP', '', false, false);
    expect(same(ports(unhealthy), [pBad]), `selectInstances(healthy=false) ports ${ports(unhealthy)}`);
  });
  await c.deregisterInstance(svc, { ip: IP, port: pOk, clusterName: 'c1' });
  await c.deregisterInstance(svc, { ip: IP, port: pBad, clusterName: 'c1' });
}

async function scClusterFilter() {
  const c = await newClient('cluster');
  const svc = uniq('clu');
  const pa = fakePort();
  const pb = fakePort();
  await check('node.list.cluster_filter', async () => {
    await c.registerInstance(svc, { ip: IP, port: pa, clusterName: 'c-a' });
    await c.registerInstance(svc, { ip: IP, port: pb, clusterName: 'c-b' });
    const a = await list(c, svc, 'DEFAULT_GROUP', 'c-a');
    expect(same(ports(a), [pa]), `clusters=c-a gave ${ports(a)}`);
    const b = await list(c, svc, 'DEFAULT_GROUP', 'c-b');
    expect(same(ports(b), [pb]), `clusters=c-b gave ${ports(b)}`);
    const ab = await list(c, svc, 'DEFAULT_GROUP', 'c-a,c-b');
    expect(same(ports(ab), [pa, pb]), `clusters=c-a,c-b gave ${ports(ab)}`);
    const all = await list(c, svc);
    expect(same(ports(all), [pa, pb]), `no filter gave ${ports(all)}`);
    const sel = await c.selectInstances(svc, 'DEFAULT_GROUP', 'c-b', true, false);
    expect(same(ports(sel), [pb]), `selectInstances(clusters=c-b) gave ${ports(sel)}`);
  });
  await c.deregisterInstance(svc, { ip: IP, port: pa, clusterName: 'c-a' });
  await c.deregisterInstance(svc, { ip: IP, port: pb, clusterName: 'c-b' });
}

async function scDeregister() {
  const c = await newClient('dereg');
  const svc = uniq('dereg');
  const p1 = fakePort();
  const p2 = fakePort();
  await check('node.deregister', async () => {
    await c.registerInstance(svc, { ip: IP, port: p1, clusterName: 'c1' });
    await c.registerInstance(svc, { ip: IP, port: p2, clusterName: 'c1' });
    expect(same(ports(await list(c, svc)), [p1, p2]), 'both instances not listed');
    await c.deregisterInstance(svc, { ip: IP, port: p1, clusterName: 'c1' });
    const left = ports(await list(c, svc));
    expect(same(left, [p2]), `after deregister expected [${p2}], got [${left}]`);
    await c.deregisterInstance(svc, { ip: IP, port: p2, clusterName: 'c1' });
    const none = await freshList(svc);
    expect(none.length === 0, `after deregistering both: ${ports(none)}`);
  });
  // Node deregisters with the grouped name and no groupName parameter.
  const svc2 = uniq('dereg-grp');
  const p3 = fakePort();
  const p4 = fakePort();
  await check('node.deregister.non_default_group', async () => {
    await c.registerInstance(svc2, { ip: IP, port: p3, clusterName: 'c1' }, 'G-X');
    await c.registerInstance(svc2, { ip: IP, port: p4, clusterName: 'c1' }, 'G-X');
    expect(same(ports(await list(c, svc2, 'G-X')), [p3, p4]), 'instances not listed in G-X');
    await c.deregisterInstance(svc2, { ip: IP, port: p3, clusterName: 'c1' }, 'G-X');
    const left = ports(await list(c, svc2, 'G-X'));
    expect(same(left, [p4]), `after deregister in G-X expected [${p4}], got [${left}]`);
  });
  await c.deregisterInstance(svc2, { ip: IP, port: p4, clusterName: 'c1' }, 'G-X');
}

async function scHeartbeat() {
  const c = await newClient('heartbeat');
  const ctl = await newClient('heartbeat-ctl');
  const svc = uniq('hb');
  const p = fakePort();
  const pCtl = fakePort();
  await check('node.heartbeat.keeps_healthy_22s', async () => {
    await c.registerInstance(svc, { ip: IP, port: p, clusterName: 'c1' });
    // An unhealthy, non-beating neighbour: without it the protect threshold would report a
    // lone expired instance as healthy and hide a missing beat.
    await ctl.registerInstance(svc, { ip: IP, port: pCtl, clusterName: 'c1', healthy: false });
    await closeClient(ctl);
    await sleep(22000);
    const hosts = await list(c, svc);
    const h = find(hosts, p);
    expect(h, `beating instance disappeared after 22 s (hosts ${ports(hosts)})`);
    expect(h.healthy === true, 'beating instance unhealthy after 22 s');
  });
  await c.deregisterInstance(svc, { ip: IP, port: p, clusterName: 'c1' });
  await c.deregisterInstance(svc, { ip: IP, port: pCtl, clusterName: 'c1' });
}

async function scExpiry() {
  const anchorClient = await newClient('expiry-anchor');
  const victimClient = await newClient('expiry-victim');
  const svc = uniq('expire');
  const pAnchor = fakePort();
  const pVictim = fakePort();
  if (!await check('node.expiry.setup', async () => {
    await anchorClient.registerInstance(svc, { ip: IP, port: pAnchor, clusterName: 'c1' });
    await victimClient.registerInstance(svc, { ip: IP, port: pVictim, clusterName: 'c1' });
  })) return;
  // closing the client stops its beat loop: the victim receives no beat from now on
  await closeClient(victimClient);
  const t0 = Date.now();
  let unhealthyAt = null;
  let goneAt = null;
  const errors = [];
  while ((Date.now() - t0) / 1000 < GONE_WITHIN + 5) {
    let hosts;
    try {
      hosts = await list(anchorClient, svc);
    } catch (err) {
      errors.push(err.message);
      await sleep(1000);
      continue;
    }
    const t = (Date.now() - t0) / 1000;
    const v = find(hosts, pVictim);
    if (v && v.healthy === false && unhealthyAt === null) unhealthyAt = t;
    if (!v) {
      goneAt = t;
      if (unhealthyAt === null) unhealthyAt = t;
      break;
    }
    await sleep(1000);
  }
  const last = await list(anchorClient, svc).catch(err => { errors.push(err.message); return []; });
  console.log(`# node expiry: unhealthy seen at ${unhealthyAt === null ? null : unhealthyAt.toFixed(1)} s, gone at ${goneAt === null ? null : goneAt.toFixed(1)} s after the last beat`);
  await check('node.expiry.unhealthy_after_15s', async () => {
    expect(unhealthyAt !== null, `victim never became unhealthy ${errors.slice(0, 3)}`);
    expect(unhealthyAt >= UNHEALTHY_NOT_BEFORE && unhealthyAt <= UNHEALTHY_WITHIN,
      `victim unhealthy ${unhealthyAt.toFixed(1)} s after its last beat, expected ${UNHEALTHY_NOT_BEFORE}..${UNHEALTHY_WITHIN} s`);
  });
  await check('node.expiry.removed_after_30s', async () => {
    expect(goneAt !== null, `victim still listed ${GONE_WITHIN + 5} s after its last beat`);
    expect(goneAt >= GONE_NOT_BEFORE && goneAt <= GONE_WITHIN,
      `victim removed ${goneAt.toFixed(1)} s after its last beat, expected ${GONE_NOT_BEFORE}..${GONE_WITHIN} s`);
  });
  await check('node.expiry.beating_neighbour_survives', async () => {
    const a = find(last, pAnchor);
    expect(a, 'beating anchor instance disappeared');
    expect(a.healthy === true, 'beating anchor instance unhealthy');
  });
  await anchorClient.deregisterInstance(svc, { ip: IP, port: pAnchor, clusterName: 'c1' });
}

async function scPersistent() {
  const c = await newClient('persistent');
  const svc = uniq('persist');
  // persistent instances are TCP-probed by the server: give it a real listener
  const srv = net.createServer(sock => sock.destroy());
  await new Promise(resolve => srv.listen(0, IP, resolve));
  const port = srv.address().port;
  try {
    if (!await check('node.persistent.register', async () => {
      await c.registerInstance(svc, { ip: IP, port, clusterName: 'c1', ephemeral: false });
      const h = find(await list(c, svc), port);
      expect(h, 'persistent instance not listed');
      expect(h.ephemeral === false, `ephemeral flag ${h.ephemeral}`);
    })) return;
    await check('node.persistent.stays_without_beats', async () => {
      await sleep(36000);
      const h = find(await freshList(svc), port);
      expect(h, 'persistent instance removed without beats after 36 s');
    });
    await check('node.persistent.deregister', async () => {
      await c.deregisterInstance(svc, { ip: IP, port, clusterName: 'c1', ephemeral: false });
      const left = await freshList(svc);
      expect(!find(left, port), 'persistent instance still listed after deregister(ephemeral=false)');
    });
  } finally {
    srv.close();
  }
}

async function scGroupIsolation() {
  const c = await newClient('group');
  const svc = uniq('grp');
  const pa = fakePort();
  const pb = fakePort();
  await check('node.isolation.group', async () => {
    await c.registerInstance(svc, { ip: IP, port: pa, clusterName: 'c1' }, 'G-A');
    await c.registerInstance(svc, { ip: IP, port: pb, clusterName: 'c1' }, 'G-B');
    const a = await list(c, svc, 'G-A');
    expect(same(ports(a), [pa]), `group G-A lists ${ports(a)}`);
    const b = await list(c, svc, 'G-B');
    expect(same(ports(b), [pb]), `group G-B lists ${ports(b)}`);
    const d = await list(c, svc, 'DEFAULT_GROUP');
    expect(d.length === 0, `DEFAULT_GROUP lists ${ports(d)}`);
    await c.deregisterInstance(svc, { ip: IP, port: pa, clusterName: 'c1' }, 'G-A');
    expect(same(ports(await freshList(svc, 'G-B')), [pb]), 'deregistering in G-A touched G-B');
    expect((await freshList(svc, 'G-A')).length === 0, 'G-A not empty after deregister');
  });
  await c.deregisterInstance(svc, { ip: IP, port: pb, clusterName: 'c1' }, 'G-B');
}

async function scNamespaceIsolation() {
  const nsA = uniq('ns-a');
  const nsB = uniq('ns-b');
  const ca = await newClient('ns-a', { namespace: nsA });
  const cb = await newClient('ns-b', { namespace: nsB });
  const cpub = await newClient('ns-public');
  const svc = uniq('nsiso');
  const pa = fakePort();
  const pb = fakePort();
  await check('node.isolation.namespace', async () => {
    await ca.registerInstance(svc, { ip: IP, port: pa, clusterName: 'c1' });
    await cb.registerInstance(svc, { ip: IP, port: pb, clusterName: 'c1' });
    expect(same(ports(await list(ca, svc)), [pa]), 'namespace a does not list exactly its instance');
    expect(same(ports(await list(cb, svc)), [pb]), 'namespace b does not list exactly its instance');
    const pub = await list(cpub, svc);
    expect(pub.length === 0, `default namespace lists ${ports(pub)}`);
    await ca.deregisterInstance(svc, { ip: IP, port: pa, clusterName: 'c1' });
    expect(same(ports(await freshList(svc, 'DEFAULT_GROUP', '', nsB)), [pb]), 'deregistering in ns a touched ns b');
    expect((await freshList(svc, 'DEFAULT_GROUP', '', nsA)).length === 0, 'ns a not empty after deregister');
  });
  await cb.deregisterInstance(svc, { ip: IP, port: pb, clusterName: 'c1' });
}

async function scPush() {
  const writer = await newClient('push-writer');
  const sub = await newClient('push-subscriber');
  const svc = uniq('push');
  const pA = fakePort();
  const pB = fakePort();
  const updates = [];
  let waiters = [];
  const listener = hosts => {
    updates.push({ at: Date.now(), ports: ports(hosts || []) });
    waiters = waiters.filter(w => !w(hosts || []));
  };
  const waitFor = (pred, ms) => new Promise(resolve => {
    const timer = setTimeout(() => resolve(false), ms);
    waiters.push(hosts => {
      if (!pred(hosts)) return false;
      clearTimeout(timer);
      resolve(true);
      return true;
    });
  });
  if (!await check('node.subscribe.initial', async () => {
    // subscribe() watches clusters "DEFAULT", so the instances live there
    await writer.registerInstance(svc, { ip: IP, port: pA, clusterName: 'DEFAULT' });
    const seen = waitFor(hosts => !!find(hosts, pA), 5000);
    sub.subscribe({ serviceName: svc, groupName: 'DEFAULT_GROUP' }, listener);
    expect(await seen, `listener not called with the existing instance within 5 s (updates ${JSON.stringify(updates)})`);
  })) return;
  // let the client's first follow-up poll (1 s after subscribing) pass; the next poll is
  // cacheMillis (10 s) later, so anything faster than that is the UDP push
  await sleep(2000);
  await check('node.push.on_register', async () => {
    const pushesBefore = sub.testLogger.pushes.length;
    const t0 = Date.now();
    const seen = waitFor(hosts => !!find(hosts, pB), 6000);
    await writer.registerInstance(svc, { ip: IP, port: pB, clusterName: 'DEFAULT' });
    const ok = await seen;
    const pushes = sub.testLogger.pushes.slice(pushesBefore);
    expect(ok, `listener not told about the new instance within 6 s; UDP pushes received: ${pushes.length}`);
    const pushed = pushes.some(p => p.hostPorts.includes(pB));
    expect(pushed, `listener fired after ${Date.now() - t0} ms but no UDP push carried the new instance (it came from a poll); pushes: ${pushes.length}`);
    console.log(`# node push latency ${Date.now() - t0} ms`);
  });
  await check('node.push.on_deregister', async () => {
    const pushesBefore = sub.testLogger.pushes.length;
    const seen = waitFor(hosts => !find(hosts, pB) && !!find(hosts, pA), 6000);
    await writer.deregisterInstance(svc, { ip: IP, port: pB, clusterName: 'DEFAULT' });
    const ok = await seen;
    const pushes = sub.testLogger.pushes.length - pushesBefore;
    expect(ok, `listener not told about the removal within 6 s; UDP pushes received: ${pushes}`);
    expect(pushes > 0, 'removal seen, but not through a UDP push');
  });
  await writer.deregisterInstance(svc, { ip: IP, port: pA, clusterName: 'DEFAULT' });
}

async function scFailover() {
  const live = opts.servers.split(',')[0];
  const c = await newClient('failover', { serverList: [ opts.deadServer, live ] });
  const svc = uniq('failover');
  const p = fakePort();
  // the client starts at a random server for every request; repeat so the dead one is hit
  await check('node.failover.dead_server_in_list', async () => {
    await c.registerInstance(svc, { ip: IP, port: p, clusterName: 'c1' });
    for (let i = 0; i < 6; i++) {
      const hosts = await list(c, svc);
      expect(find(hosts, p), `instance not listed (round ${i})`);
      expect(await c.getServerStatus() === 'UP', `getServerStatus() not UP (round ${i})`);
    }
    await c.deregisterInstance(svc, { ip: IP, port: p, clusterName: 'c1' });
    expect(!find(await freshList(svc), p), 'still listed after deregister');
    const warned = c.testLogger.lines.filter(l => l.includes(opts.deadServer)).length;
    expect(warned > 0, 'the dead server was never tried (random order); cannot tell whether failover works');
  });
}

// Config publish, read, special characters and multi-byte content, remove.
async function scConfig() {
  const c = await newConfigClient();
  const dataId = uniq('cfg');
  const content = 'a: 1\n# 配置 & = % + ? #\n\tend\n';
  await check('node.config.crud', async () => {
    expect(await c.publishSingle(dataId, 'DEFAULT_GROUP', content) === true, 'publish');
    const got = await c.getConfig(dataId, 'DEFAULT_GROUP');
    expect(got === content, `getConfig returned ${JSON.stringify(got)}`);
    expect(await c.publishSingle(dataId, 'DEFAULT_GROUP', 'v2', { type: 'yaml' }) === true, 'republish');
    expect(await c.getConfig(dataId, 'DEFAULT_GROUP') === 'v2', 'updated content');
    expect(await c.remove(dataId, 'DEFAULT_GROUP') === true, 'remove');
    const gone = await c.getConfig(dataId, 'DEFAULT_GROUP');
    expect(gone === null || gone === undefined || gone === '', `after remove: ${JSON.stringify(gone)}`);
  });
}

// Listeners: on a config created later, on changes, in a namespace.
async function scConfigSubscribe() {
  const ns = uniq('cfg-ns');
  for (const namespace of [undefined, ns]) {
    const tag = namespace ? 'namespaced' : 'public';
    const c = await newConfigClient({ namespace });
    const writer = await newConfigClient({ namespace });
    const dataId = uniq('watch');
    const seen = [];
    await check(`node.config.subscribe.${tag}`, async () => {
      c.subscribe({ dataId, group: 'DEFAULT_GROUP' }, content => seen.push(content));
      await sleep(1000);
      expect(await writer.publishSingle(dataId, 'DEFAULT_GROUP', 'w1') === true, 'publish w1');
      await waitFor(() => seen.includes('w1'), 10000, `w1 (seen ${JSON.stringify(seen)})`);
      expect(await writer.publishSingle(dataId, 'DEFAULT_GROUP', 'w2') === true, 'publish w2');
      await waitFor(() => seen.includes('w2'), 10000, `w2 (seen ${JSON.stringify(seen)})`);
      if (namespace) {
        const pub = await newConfigClient();
        const other = await pub.getConfig(dataId, 'DEFAULT_GROUP');
        expect(!other, `the public namespace sees ${JSON.stringify(other)}`);
      }
    });
    c.unSubscribe({ dataId, group: 'DEFAULT_GROUP' });
  }
}

// With a dead server first in the list, config calls still succeed.
async function scConfigFailover() {
  const c = await newConfigClient({ serverAddr: `${opts.deadServer},${opts.servers}` });
  const dataId = uniq('cfg-fo');
  await check('node.config.failover', async () => {
    let ok = false;
    for (let i = 0; i < 4 && !ok; i++) {
      try {
        ok = await c.publishSingle(dataId, 'DEFAULT_GROUP', 'fo') === true;
      } catch (_) { /* the client moves to the next server */ }
    }
    expect(ok, 'publish never succeeded');
    let got = null;
    for (let i = 0; i < 4 && got !== 'fo'; i++) {
      try {
        got = await c.getConfig(dataId, 'DEFAULT_GROUP');
      } catch (_) { /* next server */ }
    }
    expect(got === 'fo', `getConfig returned ${JSON.stringify(got)}`);
  });
}

// With auth on: no credentials and a wrong password are refused on register and list, and the
// refused registrations store nothing (checked with the right credentials).
async function scAuthRefusals() {
  if (!opts.username) return;
  const svc = uniq('refused');
  const port = fakePort();
  await check('node.auth.refusals', async () => {
    for (const [what, auth] of [
      ['no credentials', null],
      ['a wrong password', { username: opts.username, password: `${opts.password}-wrong` }],
    ]) {
      const c = await newClient(`refused-${what}`, { auth });
      try {
        let registered = true;
        try {
          await c.registerInstance(svc, { ip: IP, port });
        } catch (_) {
          registered = false;
        }
        expect(!registered, `register with ${what} was not refused`);
        let listed = true;
        try {
          await c.getAllInstances(svc, 'DEFAULT_GROUP', '', false);
        } catch (_) {
          listed = false;
        }
        expect(!listed, `list with ${what} was not refused`);
      } finally {
        await closeClient(c);
      }
    }
    const got = ports(await freshList(svc));
    expect(got.length === 0, `refused registrations stored ${JSON.stringify(got)}`);
  });
}

const SCENARIOS = {
  register: scRegister,
  select_healthy: scSelectHealthy,
  cluster_filter: scClusterFilter,
  deregister: scDeregister,
  heartbeat: scHeartbeat,
  expiry: scExpiry,
  persistent: scPersistent,
  group_isolation: scGroupIsolation,
  namespace_isolation: scNamespaceIsolation,
  push: scPush,
  failover: scFailover,
  auth_refusals: scAuthRefusals,
  config: scConfig,
  config_subscribe: scConfigSubscribe,
  config_failover: scConfigFailover,
};

function parseArgs(argv) {
  const o = { servers: process.env.NACRE_COMPAT_SERVERS, endpoint: null, deadServer: null, only: null, list: false, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (a.includes('=')) return a.slice(a.indexOf('=') + 1);
      i += 1;
      return argv[i];
    };
    if (a === '--servers' || a.startsWith('--servers=')) o.servers = val();
    else if (a === '--endpoint' || a.startsWith('--endpoint=')) o.endpoint = val();
    else if (a === '--dead-server' || a.startsWith('--dead-server=')) o.deadServer = val();
    else if (a === '--only' || a.startsWith('--only=')) o.only = val();
    else if (a === '--username' || a.startsWith('--username=')) o.username = val();
    else if (a === '--password' || a.startsWith('--password=')) o.password = val();
    else if (a === '--list') o.list = true;
    else if (a === '--verbose') o.verbose = true;
    else {
      console.error(`unknown argument ${a}`);
      process.exit(2);
    }
  }
  return o;
}

async function main() {
  opts = parseArgs(process.argv.slice(2));
  if (opts.list) {
    console.log(Object.keys(SCENARIOS).join('\n'));
    return 0;
  }
  if (!opts.servers) {
    console.error('--servers is required');
    return 2;
  }
  const names = opts.only ? opts.only.split(',').map(s => s.trim()).filter(Boolean) : Object.keys(SCENARIOS);
  const unknown = names.filter(n => !SCENARIOS[n]);
  if (unknown.length) {
    console.error(`unknown scenario(s): ${unknown.join(', ')} (known: ${Object.keys(SCENARIOS).join(', ')})`);
    return 2;
  }
  if (!opts.deadServer) opts.deadServer = `${IP}:${await freePort()}`;
  opts.clusterPort = await freePort();
  const versions = `nacos ${require('nacos/package.json').version}, nacos-naming ${require('nacos-naming/package.json').version}`;
  console.log(`# ${versions} against ${opts.servers} (endpoint ${opts.endpoint}, dead server ${opts.deadServer}, clientIP ${CLIENT_IP})`);
  const started = Date.now();
  const timeout = new Promise(resolve => setTimeout(() => resolve('timeout'), 150000));
  const all = Promise.all(names.map(n => SCENARIOS[n]().catch(err => {
    report(`node.${n}.crashed`, false, err && err.stack ? err.stack : String(err));
  })));
  if (await Promise.race([ all, timeout ]) === 'timeout') {
    report('node.timeout', false, 'scenarios still running after 150 s');
  }
  const passed = results.filter(r => r.ok).length;
  const failed = results.length - passed;
  console.log(`# elapsed ${((Date.now() - started) / 1000).toFixed(1)} s`);
  console.log(`node-legacy: ${passed} passed, ${failed} failed`);
  await Promise.race([ Promise.all(clients.map(closeClient)), sleep(2000) ]);
  return failed || !results.length ? 1 : 0;
}

main().then(code => process.exit(code), err => {
  console.error(err);
  process.exit(1);
});
