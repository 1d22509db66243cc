#!/usr/bin/env node
/*
 * The real legacy Node client (npm `nacos` 2.x) as a workload during a rolling restart
 * (tests/rolling.rs): registers `--instances` ephemeral instances of `--service` (the client
 * beats them itself), then lists the service from the server every 200 ms (no local cache)
 * until SIGTERM, and prints one JSON line of figures:
 *   {"lists": n, "list_errors": n, "lists_missing_instances": n, "errors_logged": n,
 *    "first_problems": [...]}
 *
 *   node rolling_clients.js --servers 127.0.0.1:8848,127.0.0.1:8849 --service S --instances 5
 *
 * Prints `READY` once every instance is listed. The client is given every address, as a
 * legacy client is given a server list; it picks one per request and moves on when one fails.
 */
'use strict';

const CLIENT_IP = '127.0.0.1';
const address = require('address');
address.ip = () => CLIENT_IP;
const { NacosNamingClient } = require('nacos');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function args(argv) {
  const o = { instances: 5 };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (k === '--servers') o.servers = v;
    else if (k === '--service') o.service = v;
    else if (k === '--instances') o.instances = Number(v);
    else throw new Error(`unknown argument ${k}`);
  }
  if (!o.servers || !o.service) throw new Error('--servers and --service are required');
  return o;
}

async function main() {
  const opts = args(process.argv.slice(2));
  const figures = { lists: 0, list_errors: 0, lists_missing_instances: 0, errors_logged: 0, first_problems: [] };
  const problem = (p) => { if (figures.first_problems.length < 5) figures.first_problems.push(p); };
  const logger = {
    info() {}, debug() {}, log() {}, warn() {},
    error(...a) { figures.errors_logged += 1; problem(`logged: ${a.map(String).join(' ').slice(0, 200)}`); },
  };
  const client = new NacosNamingClient({ logger, serverList: opts.servers });
  client.on('error', (e) => { figures.errors_logged += 1; problem(`error event: ${e && e.message}`); });
  await client.ready();
  const ports = Array.from({ length: opts.instances }, (_, k) => 19000 + k);
  for (const port of ports) {
    await client.registerInstance(opts.service, { ip: CLIENT_IP, port });
  }
  const listed = async () => {
    const hosts = await client.getAllInstances(opts.service, 'DEFAULT_GROUP', [], false);
    return ports.every((p) => hosts.some((h) => h.port === p && h.healthy !== false));
  };
  while (!(await listed().catch(() => false))) await sleep(100);
  console.log('READY');

  let stopping = false;
  process.on('SIGTERM', () => { stopping = true; });
  while (!stopping) {
    figures.lists += 1;
    try {
      if (!(await listed())) {
        figures.lists_missing_instances += 1;
        problem(`list ${figures.lists}: an instance missing or unhealthy`);
      }
    } catch (e) {
      figures.list_errors += 1;
      problem(`list ${figures.lists}: ${e && e.message}`);
    }
    await sleep(200);
  }
  console.log(JSON.stringify(figures));
  await client.close();
  process.exit(0);
}

main().catch((e) => {
  console.log(JSON.stringify({ driver_error: String(e && e.stack || e) }));
  process.exit(1);
});
