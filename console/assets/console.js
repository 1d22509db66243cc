// nacre's web console. One page, plain JavaScript modules, no build step: it calls the same
// HTTP APIs the Nacos clients and tools use (naming `catalog/*`, `service`, `instance`,
// `console/namespaces`, `cs/configs`, `cs/history`, `/nacre/v1/cluster`, the gateway's
// `/nacre/gateway/status`). Every piece of data is put in the page as text (never as HTML), so
// names, metadata and config contents cannot run as script.
import { lineDiff } from './diff.js';

const PAGE_SIZE = 20;
const INSTANCE_PAGE = 10000;
const REFRESH_MS = 2000;
const LOGIN_PATH = '/nacos/v1/auth/login';

const state = {
  ns: localStorage.getItem('nacre.namespace') || '',
  token: sessionStorage.getItem('nacre.token') || '',
  user: sessionStorage.getItem('nacre.user') || '',
  timer: null,
  namespaces: [],
};

// ---------------------------------------------------------------- DOM and HTTP helpers

/** Builds an element: attributes (`on*` are listeners), then children (strings become text). */
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else if (k === 'value') e.value = v;
    else if (k === 'checked') e.checked = Boolean(v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of kids.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function table(headers, rows, attrs) {
  return h('table', attrs,
    h('thead', null, h('tr', null, headers.map((x) => h('th', typeof x === 'string' ? null : x.attrs, typeof x === 'string' ? x : x.text)))),
    h('tbody', null, rows));
}

function badge(ok, yes, no, warn) {
  return h('span', { class: `badge ${ok ? 'ok' : warn ? 'warn' : 'bad'}` }, ok ? yes : no);
}

function field(label, input) {
  return h('label', null, label, input);
}

function check(label, input) {
  return h('label', { class: 'check' }, input, label);
}

function flash(message, error) {
  const el = document.getElementById('flash');
  el.textContent = message;
  el.className = message ? `show${error ? ' error' : ''}` : '';
}

class ApiError extends Error {
  constructor(status, body) {
    super(`${status}: ${body.slice(0, 300)}`);
    this.status = status;
    this.body = body;
  }
}

/** The logged-in user's token, as every call sends it. */
function authorization() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

/**
 * Calls an API. `params` go in the query for GET and DELETE, in a form body otherwise (as the
 * Nacos clients send them). The token goes in the `Authorization` header.
 */
async function api(method, path, params = {}, headers = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null) q.append(k, String(v));
  }
  const init = { method, headers: { ...headers, ...authorization() } };
  let url = path;
  if (method === 'GET' || method === 'DELETE') {
    if ([...q].length) url += `?${q}`;
  } else {
    init.body = q;
  }
  const res = await fetch(url, init);
  const text = await res.text();
  if (!res.ok) {
    if (res.status === 403 && path !== LOGIN_PATH && !/authorization failed/i.test(text)) {
      // No token, or one the cluster no longer accepts: log in again.
      logout(false);
      goto('login', { next: location.hash });
    }
    throw new ApiError(res.status, text);
  }
  return (res.headers.get('content-type') || '').includes('json') ? JSON.parse(text) : text;
}

/** Runs `fn`; shows its failure in the flash bar instead of leaving the page half-drawn. */
async function guarded(fn, done) {
  flash('');
  try {
    const r = await fn();
    if (done) flash(done);
    return r;
  } catch (e) {
    flash(e.message || String(e), true);
    return undefined;
  }
}

function goto(page, params = {}) {
  const q = new URLSearchParams(params).toString();
  location.hash = `#/${page}${q ? `?${q}` : ''}`;
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [page, query] = raw.split('?', 2);
  return { page: page || 'services', q: Object.fromEntries(new URLSearchParams(query || '')) };
}

function nsParam() {
  return { namespaceId: state.ns };
}

function kv(meta) {
  return Object.entries(meta || {}).map(([k, v]) => `${k}=${v}`).join(', ');
}

function parseMeta(text) {
  const t = text.trim();
  if (!t) return {};
  const v = JSON.parse(t);
  if (typeof v !== 'object' || Array.isArray(v) || v === null) throw new Error('metadata must be a JSON object');
  return v;
}

function pager(page, pages, go) {
  return h('div', { class: 'pager' },
    h('button', { disabled: page <= 1, onclick: () => go(page - 1), 'data-t': 'prev' }, '‹ Prev'),
    h('span', null, `Page ${page} of ${Math.max(pages, 1)}`),
    h('button', { disabled: page >= pages, onclick: () => go(page + 1), 'data-t': 'next' }, 'Next ›'));
}

// ---------------------------------------------------------------- session

function logout(redraw = true) {
  state.token = '';
  state.user = '';
  sessionStorage.removeItem('nacre.token');
  sessionStorage.removeItem('nacre.user');
  drawWho();
  if (redraw) goto('login');
}

function drawWho() {
  const who = document.getElementById('who');
  who.replaceChildren(state.user
    ? h('span', null, state.user, h('button', { onclick: () => logout(), 'data-t': 'logout' }, 'Log out'))
    : '');
}

async function pageLogin(main, q) {
  const user = h('input', { name: 'username', autocomplete: 'username', 'data-t': 'username' });
  const pass = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', 'data-t': 'password' });
  const submit = async (ev) => {
    ev.preventDefault();
    await guarded(async () => {
      const r = await api('POST', LOGIN_PATH, { username: user.value, password: pass.value });
      state.token = r.accessToken;
      state.user = user.value;
      sessionStorage.setItem('nacre.token', state.token);
      sessionStorage.setItem('nacre.user', state.user);
      drawWho();
      await loadNamespaces();
      location.hash = q.next && q.next.startsWith('#/') && !q.next.startsWith('#/login') ? q.next : '#/services';
    }, 'Logged in');
  };
  main.replaceChildren(h('h1', null, 'Log in'),
    h('p', { class: 'muted' }, 'This cluster requires a user (Nacos auth).'),
    h('form', { class: 'row', onsubmit: submit },
      field('Username', user), field('Password', pass),
      h('button', { class: 'primary', type: 'submit', 'data-t': 'login' }, 'Log in')));
}

// ---------------------------------------------------------------- namespaces

async function loadNamespaces() {
  const select = document.getElementById('namespace');
  try {
    const r = await api('GET', '/nacos/v1/console/namespaces');
    state.namespaces = r.data || [];
  } catch (e) {
    state.namespaces = [{ namespace: '', namespaceShowName: 'public' }];
  }
  if (!state.namespaces.some((n) => n.namespace === state.ns)) state.ns = '';
  select.replaceChildren(...state.namespaces.map((n) => h('option', { value: n.namespace },
    n.namespace ? `${n.namespaceShowName} (${n.namespace})` : n.namespaceShowName)));
  select.value = state.ns;
}

async function pageNamespaces(main) {
  const r = await api('GET', '/nacos/v1/console/namespaces');
  const rows = (r.data || []).map((n) => {
    const name = h('input', { value: n.namespaceShowName, 'data-t': 'ns-name' });
    const desc = h('input', { value: n.namespaceDesc || '', 'data-t': 'ns-desc' });
    const fixed = n.namespace === '';
    return h('tr', { 'data-ns': n.namespace },
      h('td', null, n.namespace || h('span', { class: 'muted' }, '(public)')),
      h('td', null, fixed ? n.namespaceShowName : name),
      h('td', null, fixed ? (n.namespaceDesc || '') : desc),
      h('td', { class: 'num' }, n.configCount),
      h('td', { class: 'num' }, n.quota),
      h('td', null, fixed ? '' : [
        h('button', {
          'data-t': 'ns-save',
          onclick: () => guarded(async () => {
            await api('PUT', '/nacos/v1/console/namespaces', { namespace: n.namespace, namespaceShowName: name.value, namespaceDesc: desc.value });
            await loadNamespaces();
            await route();
          }, `Namespace ${n.namespace} saved`),
        }, 'Save'),
        ' ',
        h('button', {
          class: 'danger',
          'data-t': 'ns-delete',
          onclick: () => confirm(`Delete namespace ${n.namespace}?`) && guarded(async () => {
            await api('DELETE', '/nacos/v1/console/namespaces', { namespaceId: n.namespace });
            await loadNamespaces();
            await route();
          }, `Namespace ${n.namespace} deleted`),
        }, 'Delete'),
      ]));
  });
  const id = h('input', { placeholder: 'generated when empty', 'data-t': 'new-ns-id' });
  const name = h('input', { required: true, 'data-t': 'new-ns-name' });
  const desc = h('input', { 'data-t': 'new-ns-desc' });
  const create = (ev) => {
    ev.preventDefault();
    guarded(async () => {
      const params = { namespaceName: name.value, namespaceDesc: desc.value };
      if (id.value.trim()) params.customNamespaceId = id.value.trim();
      await api('POST', '/nacos/v1/console/namespaces', params);
      await loadNamespaces();
      await route();
    }, `Namespace ${name.value} created`);
  };
  main.replaceChildren(h('h1', null, 'Namespaces'),
    table(['ID', 'Name', 'Description', { text: 'Configs', attrs: { class: 'num' } }, { text: 'Quota', attrs: { class: 'num' } }, ''], rows, { 'data-t': 'namespaces' }),
    h('h2', null, 'Create a namespace'),
    h('form', { class: 'row', onsubmit: create },
      field('ID', id), field('Name', name), field('Description', desc),
      h('button', { class: 'primary', type: 'submit', 'data-t': 'ns-create' }, 'Create')));
}

// ---------------------------------------------------------------- services

async function pageServices(main, q) {
  const page = Number(q.page || 1);
  const nameQ = q.name || '';
  const groupQ = q.group || '';
  const hideEmpty = q.hideEmpty === 'true';
  const r = await api('GET', '/nacos/v1/ns/catalog/services', {
    ...nsParam(), pageNo: page, pageSize: PAGE_SIZE, serviceNameParam: nameQ, groupNameParam: groupQ, hasIpCount: hideEmpty,
  });
  const pages = Math.ceil(r.count / PAGE_SIZE);
  const nameIn = h('input', { value: nameQ, placeholder: 'part of the name', 'data-t': 'svc-filter' });
  const groupIn = h('input', { value: groupQ, placeholder: 'part of the group', 'data-t': 'group-filter' });
  const hide = h('input', { type: 'checkbox', checked: hideEmpty, 'data-t': 'hide-empty' });
  const search = (ev) => {
    ev.preventDefault();
    goto('services', { name: nameIn.value, group: groupIn.value, hideEmpty: hide.checked, page: 1 });
  };
  const rows = r.serviceList.map((s) => h('tr', { 'data-service': s.name },
    h('td', null, h('a', { href: `#/service?${new URLSearchParams({ name: s.name, group: s.groupName })}` }, s.name)),
    h('td', null, s.groupName),
    h('td', { class: 'num' }, s.clusterCount),
    h('td', { class: 'num' }, s.ipCount),
    h('td', { class: 'num' }, s.healthyInstanceCount),
    h('td', null, s.triggerFlag === 'true' ? badge(false, '', 'protecting', true) : ''),
    h('td', { class: 'muted' }, s.owner || '')));
  const svcName = h('input', { required: true, 'data-t': 'new-svc-name' });
  const svcGroup = h('input', { value: 'DEFAULT_GROUP', 'data-t': 'new-svc-group' });
  const threshold = h('input', { value: '0', size: 4, 'data-t': 'new-svc-threshold' });
  const create = (ev) => {
    ev.preventDefault();
    guarded(async () => {
      await api('POST', '/nacos/v1/ns/service', { ...nsParam(), serviceName: svcName.value, groupName: svcGroup.value, protectThreshold: threshold.value });
      await route();
    }, `Service ${svcName.value} created`);
  };
  main.replaceChildren(
    h('h1', null, `Services — ${nsLabel()}`),
    h('form', { class: 'row', onsubmit: search },
      field('Service', nameIn), field('Group', groupIn), check('Hide empty services', hide),
      h('button', { class: 'primary', type: 'submit', 'data-t': 'search' }, 'Search')),
    table(['Service', 'Group', { text: 'Clusters', attrs: { class: 'num' } }, { text: 'Instances', attrs: { class: 'num' } },
      { text: 'Healthy', attrs: { class: 'num' } }, 'Protection', 'Owner node'], rows, { 'data-t': 'services' }),
    h('p', { class: 'muted' }, `${r.count} services`),
    pager(page, pages, (p) => goto('services', { ...q, page: p })),
    h('h2', null, 'Create a service'),
    h('form', { class: 'row', onsubmit: create },
      field('Name', svcName), field('Group', svcGroup), field('Protect threshold', threshold),
      h('button', { type: 'submit', 'data-t': 'svc-create' }, 'Create')));
}

function nsLabel() {
  const n = state.namespaces.find((x) => x.namespace === state.ns);
  return n ? n.namespaceShowName : (state.ns || 'public');
}

async function pageService(main, q) {
  const svc = { ...nsParam(), serviceName: q.name, groupName: q.group || 'DEFAULT_GROUP' };
  const detail = await api('GET', '/nacos/v1/ns/catalog/service', svc);
  const instances = [];
  for (const c of detail.clusters) {
    const r = await api('GET', '/nacos/v1/ns/catalog/instances', { ...svc, clusterName: c.name, pageNo: 1, pageSize: INSTANCE_PAGE });
    instances.push(...r.list);
  }
  let subscribers = [];
  try {
    subscribers = (await api('GET', '/nacos/v1/ns/service/subscribers', { ...svc, pageNo: 1, pageSize: 1000 })).subscribers || [];
  } catch (e) {
    flash(`subscribers: ${e.message}`, true);
  }
  main.replaceChildren(
    h('p', null, h('a', { href: '#/services' }, '‹ Services')),
    h('h1', null, `${detail.service.groupName}@@${detail.service.name}`),
    serviceForm(svc, detail.service),
    h('h2', null, 'Instances'),
    instanceTable(svc, instances),
    persistentForm(svc),
    h('h2', null, 'Clusters'),
    ...detail.clusters.map((c) => clusterForm(svc, c)),
    h('h2', null, `Subscribers (${subscribers.length})`),
    table(['Address', 'Agent', 'App', 'Clusters'], subscribers.map((s) => h('tr', null,
      h('td', null, s.addrStr), h('td', null, s.agent), h('td', null, s.app), h('td', null, s.cluster))), { 'data-t': 'subscribers' }));
}

function serviceForm(svc, s) {
  const threshold = h('input', { value: s.protectThreshold, size: 5, 'data-t': 'svc-threshold' });
  const selector = s.selector || { type: 'none' };
  const selType = h('select', { 'data-t': 'svc-selector-type' },
    h('option', { value: 'none' }, 'none'), h('option', { value: 'label' }, 'label'));
  selType.value = selector.type === 'label' ? 'label' : 'none';
  const selExpr = h('input', { value: selector.expression || '', size: 40, 'data-t': 'svc-selector-expr' });
  const meta = h('textarea', { 'data-t': 'svc-metadata' }, JSON.stringify(s.metadata || {}, null, 2));
  const save = (ev) => {
    ev.preventDefault();
    guarded(async () => {
      const sel = selType.value === 'label' ? { type: 'label', expression: selExpr.value } : { type: 'none' };
      await api('PUT', '/nacos/v1/ns/service', {
        ...svc, protectThreshold: threshold.value, metadata: JSON.stringify(parseMeta(meta.value)), selector: JSON.stringify(sel),
      });
      await route();
    }, 'Service saved');
  };
  const remove = () => confirm(`Delete service ${svc.serviceName}?`) && guarded(async () => {
    await api('DELETE', '/nacos/v1/ns/service', svc);
    goto('services');
  }, 'Service deleted');
  return h('form', { class: 'card', onsubmit: save },
    h('div', { class: 'row' }, field('Protect threshold (0–1)', threshold), field('Selector', selType), field('Label expression', selExpr)),
    field('Metadata (JSON object)', meta),
    h('div', { class: 'row' },
      h('button', { class: 'primary', type: 'submit', 'data-t': 'svc-save' }, 'Save service'),
      h('button', { class: 'danger', type: 'button', onclick: remove, 'data-t': 'svc-delete' }, 'Delete service')));
}

function instanceTable(svc, all) {
  const filter = h('input', { placeholder: 'key=value', 'data-t': 'meta-filter' });
  const tbody = h('tbody');
  const selected = new Set();
  const id = (i) => `${i.clusterName}|${i.ip}|${i.port}`;
  const draw = () => {
    const [fk, fv] = filter.value.split('=', 2).map((x) => x.trim());
    const shown = all.filter((i) => !fk || (i.metadata && i.metadata[fk] !== undefined && (fv === undefined || i.metadata[fk] === fv)));
    tbody.replaceChildren(...shown.map((i) => instanceRow(svc, i, selected.has(id(i)), (on) => (on ? selected.add(id(i)) : selected.delete(id(i))))));
  };
  filter.addEventListener('input', draw);
  const batch = (enabled) => guarded(async () => {
    const chosen = all.filter((i) => selected.has(id(i)));
    if (!chosen.length) throw new Error('select instances first');
    for (const i of chosen) await patchInstance(svc, i, { enabled });
    await route();
  }, enabled ? 'Instances online' : 'Instances offline');
  draw();
  return h('div', null,
    h('div', { class: 'row' }, field('Metadata filter', filter),
      h('button', { onclick: () => batch(false), 'data-t': 'batch-offline' }, 'Take selected offline'),
      h('button', { onclick: () => batch(true), 'data-t': 'batch-online' }, 'Bring selected online')),
    h('table', { 'data-t': 'instances' },
      h('thead', null, h('tr', null, ['', 'Address', 'Cluster', 'Kind', 'Weight', 'Health', 'Traffic', 'Metadata', ''].map((x) => h('th', null, x)))),
      tbody));
}

function patchInstance(svc, i, change) {
  return api('PATCH', '/nacos/v1/ns/instance', {
    ...svc, clusterName: i.clusterName, ip: i.ip, port: i.port, ephemeral: i.ephemeral, ...change,
  });
}

function instanceRow(svc, i, isSelected, onSelect) {
  const box = h('input', { type: 'checkbox', checked: isSelected, onchange: (e) => onSelect(e.target.checked), 'data-t': 'select' });
  const row = h('tr', { class: i.enabled ? '' : 'offline', 'data-instance': `${i.ip}:${i.port}` },
    h('td', null, box),
    h('td', null, `${i.ip}:${i.port}`),
    h('td', null, i.clusterName),
    h('td', null, i.ephemeral ? 'ephemeral' : 'persistent'),
    h('td', { class: 'num' }, i.weight),
    h('td', null, badge(i.healthy, 'healthy', 'unhealthy')),
    h('td', null, badge(i.enabled, 'online', 'offline', true)),
    h('td', { class: 'kv' }, kv(i.metadata)),
    h('td', null,
      h('button', {
        'data-t': i.enabled ? 'offline' : 'online',
        onclick: () => guarded(async () => { await patchInstance(svc, i, { enabled: !i.enabled }); await route(); },
          `${i.ip}:${i.port} ${i.enabled ? 'offline' : 'online'}`),
      }, i.enabled ? 'Offline' : 'Online'), ' ',
      h('button', { 'data-t': 'edit', onclick: () => row.after(instanceEditor(svc, i)) }, 'Edit'), ' ',
      h('button', {
        class: 'danger',
        'data-t': 'deregister',
        onclick: () => confirm(`Remove ${i.ip}:${i.port}?`) && guarded(async () => {
          await api('DELETE', '/nacos/v1/ns/instance', { ...svc, clusterName: i.clusterName, ip: i.ip, port: i.port, ephemeral: i.ephemeral });
          await route();
        }, `${i.ip}:${i.port} removed`),
      }, 'Remove')));
  return row;
}

function instanceEditor(svc, i) {
  const weight = h('input', { value: i.weight, size: 6, 'data-t': 'edit-weight' });
  const enabled = h('input', { type: 'checkbox', checked: i.enabled, 'data-t': 'edit-enabled' });
  const meta = h('textarea', { 'data-t': 'edit-metadata' }, JSON.stringify(i.metadata || {}, null, 2));
  const save = (ev) => {
    ev.preventDefault();
    guarded(async () => {
      await patchInstance(svc, i, { weight: weight.value, enabled: enabled.checked, metadata: JSON.stringify(parseMeta(meta.value)) });
      await route();
    }, `${i.ip}:${i.port} saved`);
  };
  return h('tr', null, h('td', { colspan: 9 },
    h('form', { class: 'card', onsubmit: save },
      h('div', { class: 'row' }, field('Weight', weight), check('Online', enabled)),
      field('Metadata (JSON object)', meta),
      h('button', { class: 'primary', type: 'submit', 'data-t': 'edit-save' }, 'Save instance'))));
}

function persistentForm(svc) {
  const ip = h('input', { placeholder: '10.0.0.1', 'data-t': 'new-ip' });
  const port = h('input', { size: 6, 'data-t': 'new-port' });
  const cluster = h('input', { value: 'DEFAULT', 'data-t': 'new-cluster' });
  const weight = h('input', { value: '1', size: 5 });
  const add = (ev) => {
    ev.preventDefault();
    guarded(async () => {
      await api('POST', '/nacos/v1/ns/instance', { ...svc, ip: ip.value, port: port.value, clusterName: cluster.value, weight: weight.value, ephemeral: false });
      await route();
    }, `${ip.value}:${port.value} registered`);
  };
  return h('form', { class: 'row', onsubmit: add },
    h('span', { class: 'muted' }, 'Add a persistent instance:'),
    field('IP', ip), field('Port', port), field('Cluster', cluster), field('Weight', weight),
    h('button', { type: 'submit', 'data-t': 'add-instance' }, 'Add'));
}

function clusterForm(svc, c) {
  const hc = c.healthChecker || { type: 'TCP' };
  const type = h('select', null, ['TCP', 'HTTP', 'MYSQL', 'NONE'].map((t) => h('option', { value: t }, t)));
  type.value = (hc.type || 'TCP').toUpperCase();
  const path = h('input', { value: hc.path || '', placeholder: '/health' });
  const checkPort = h('input', { value: c.defaultCheckPort, size: 6 });
  const usePort = h('input', { type: 'checkbox', checked: c.useIPPort4Check });
  const meta = h('textarea', null, JSON.stringify(c.metadata || {}, null, 2));
  const save = (ev) => {
    ev.preventDefault();
    guarded(async () => {
      const checker = { type: type.value };
      if (type.value === 'HTTP') checker.path = path.value || '/';
      await api('PUT', '/nacos/v1/ns/cluster', {
        ...svc, clusterName: c.name, checkPort: checkPort.value, useInstancePort4Check: usePort.checked,
        healthChecker: JSON.stringify(checker), metadata: JSON.stringify(parseMeta(meta.value)),
      });
      await route();
    }, `Cluster ${c.name} saved`);
  };
  return h('form', { class: 'card', onsubmit: save, 'data-cluster': c.name },
    h('strong', null, c.name),
    h('div', { class: 'row' }, field('Health checker (persistent instances)', type), field('HTTP path', path),
      field('Check port', checkPort), check('Use the instance port', usePort)),
    field('Metadata (JSON object)', meta),
    h('button', { type: 'submit' }, 'Save cluster'));
}

// ---------------------------------------------------------------- configs

function tenant() {
  return state.ns;
}

async function pageConfigs(main, q) {
  const page = Number(q.page || 1);
  const dataId = h('input', { value: q.dataId || '', placeholder: '* for any', 'data-t': 'cfg-filter' });
  const group = h('input', { value: q.group || '', placeholder: '* for any' });
  const r = await api('GET', '/nacos/v1/cs/configs', {
    search: 'blur', dataId: q.dataId || '', group: q.group || '', tenant: tenant(), pageNo: page, pageSize: PAGE_SIZE,
  });
  const rows = r.pageItems.map((c) => h('tr', { 'data-config': `${c.group}/${c.dataId}` },
    h('td', null, h('a', { href: `#/config?${new URLSearchParams({ dataId: c.dataId, group: c.group })}` }, c.dataId)),
    h('td', null, c.group), h('td', null, c.type || 'text'), h('td', { class: 'kv' }, c.md5),
    h('td', null,
      h('a', { href: `#/history?${new URLSearchParams({ dataId: c.dataId, group: c.group })}` }, 'History'), ' ',
      h('button', {
        class: 'danger',
        onclick: () => confirm(`Delete ${c.dataId}?`) && guarded(async () => {
          await api('DELETE', '/nacos/v1/cs/configs', { dataId: c.dataId, group: c.group, tenant: tenant() });
          await route();
        }, `${c.dataId} deleted`),
      }, 'Delete'))));
  main.replaceChildren(h('h1', null, `Configs — ${nsLabel()}`),
    h('form', { class: 'row', onsubmit: (ev) => { ev.preventDefault(); goto('configs', { dataId: dataId.value, group: group.value }); } },
      field('Data ID', dataId), field('Group', group),
      h('button', { class: 'primary', type: 'submit' }, 'Search'), ' ',
      h('button', { type: 'button', onclick: () => goto('config', { create: 'true' }), 'data-t': 'cfg-new' }, 'New config')),
    table(['Data ID', 'Group', 'Type', 'MD5', ''], rows, { 'data-t': 'configs' }),
    h('p', { class: 'muted' }, `${r.totalCount} configs`),
    pager(page, r.pagesAvailable, (p) => goto('configs', { ...q, page: p })));
}

function diffView(before, after) {
  const lines = lineDiff(before, after);
  const changed = lines.some((l) => l.op !== ' ');
  return h('pre', { class: 'diff', 'data-t': 'diff' },
    changed ? lines.map((l) => h('span', { class: l.op === '+' ? 'add' : l.op === '-' ? 'del' : 'same' }, `${l.op} ${l.line}`)) : 'no change');
}

/** Fetches a config's content and md5 (the md5 guards the publish: casMd5). */
async function readConfig(dataId, group) {
  const res = await fetch(`/nacos/v1/cs/configs?${new URLSearchParams({ dataId, group, tenant: tenant() })}`,
    { headers: authorization() });
  if (res.status === 404) return { content: '', md5: '', type: 'text', exists: false };
  const text = await res.text();
  if (!res.ok) throw new ApiError(res.status, text);
  return { content: text, md5: res.headers.get('content-md5') || '', type: res.headers.get('config-type') || 'text', exists: true };
}

async function pageConfig(main, q) {
  const creating = q.create === 'true';
  const current = creating ? { content: '', md5: '', type: 'text', exists: false } : await readConfig(q.dataId, q.group);
  const dataId = h('input', { value: q.dataId || '', readonly: !creating, 'data-t': 'cfg-dataid' });
  const group = h('input', { value: q.group || 'DEFAULT_GROUP', readonly: !creating, 'data-t': 'cfg-group' });
  const type = h('select', { 'data-t': 'cfg-type' }, ['text', 'json', 'xml', 'yaml', 'html', 'properties'].map((t) => h('option', { value: t }, t)));
  type.value = current.type;
  const content = h('textarea', { class: 'content', 'data-t': 'cfg-content' }, q.content !== undefined ? q.content : current.content);
  const review = h('div');
  const show = () => review.replaceChildren(h('h2', null, 'Changes to publish'), diffView(current.content, content.value));
  const publish = (ev) => {
    ev.preventDefault();
    guarded(async () => {
      // casMd5 makes the publish fail if someone changed the config since this page read it.
      const headers = current.exists ? { casMd5: current.md5 } : {};
      await api('POST', '/nacos/v1/cs/configs', { dataId: dataId.value, group: group.value, tenant: tenant(), content: content.value, type: type.value }, headers);
      goto('config', { dataId: dataId.value, group: group.value });
    }, `${dataId.value} published`);
  };
  let listeners = null;
  if (!creating) {
    const r = await api('GET', '/nacos/v1/cs/configs/listener', { dataId: q.dataId, group: q.group, tenant: tenant() });
    listeners = Object.entries(r.lisentersGroupkeyStatus || {});
  }
  main.replaceChildren(h('p', null, h('a', { href: '#/configs' }, '‹ Configs')),
    h('h1', null, creating ? 'New config' : `${q.group} / ${q.dataId}`),
    current.exists ? h('p', { class: 'muted' }, `md5 ${current.md5} · `, h('a', { href: `#/history?${new URLSearchParams({ dataId: q.dataId, group: q.group })}` }, 'History')) : '',
    h('form', { onsubmit: publish },
      h('div', { class: 'row' }, field('Data ID', dataId), field('Group', group), field('Type', type)),
      content,
      h('div', { class: 'row' },
        h('button', { type: 'button', onclick: show, 'data-t': 'cfg-review' }, 'Review changes'),
        h('button', { class: 'primary', type: 'submit', 'data-t': 'cfg-publish' }, 'Publish'))),
    review,
    ...(listeners === null ? [] : [
      h('h2', null, `Listeners (${listeners.length})`),
      h('p', { class: 'muted' }, 'Clients long-polling this config now, at the gateway or on a node, with the md5 they hold.'),
      table(['Client', 'MD5 held', ''], listeners.map(([client, md5]) => h('tr', { 'data-listener': client },
        h('td', null, client), h('td', { class: 'kv' }, md5 || '(none)'),
        h('td', null, badge(md5 === current.md5, 'up to date', 'behind', true)))), { 'data-t': 'listeners' }),
    ]));
  if (q.content !== undefined) show();
}

async function pageHistory(main, q) {
  const page = Number(q.page || 1);
  const key = { dataId: q.dataId, group: q.group, tenant: tenant() };
  const r = await api('GET', '/nacos/v1/cs/history', { search: 'accurate', ...key, pageNo: page, pageSize: PAGE_SIZE });
  const detail = h('div');
  const view = (item) => guarded(async () => {
    const full = await api('GET', '/nacos/v1/cs/history', { nid: item.id, ...key });
    const current = await readConfig(q.dataId, q.group);
    detail.replaceChildren(h('h2', null, `Version ${item.id} (${item.opType.trim()})`),
      h('p', { class: 'muted' }, 'Rolling back publishes this version\'s content again; what changes against the current content:'),
      diffView(current.content, full.content),
      h('button', {
        class: 'primary',
        'data-t': 'rollback',
        onclick: () => goto('config', { dataId: q.dataId, group: q.group, content: full.content }),
      }, 'Roll back to this version…'));
  });
  const rows = r.pageItems.map((it) => h('tr', { 'data-nid': it.id },
    h('td', { class: 'num' }, it.id),
    h('td', null, { I: 'created', U: 'updated', D: 'deleted' }[it.opType.trim()] || it.opType),
    h('td', null, new Date(it.lastModifiedTime).toISOString()),
    h('td', null, it.srcIp), h('td', null, it.srcUser || ''),
    h('td', { class: 'kv' }, it.md5),
    h('td', null, h('button', { onclick: () => view(it), 'data-t': 'view' }, 'View'))));
  main.replaceChildren(h('p', null, h('a', { href: `#/config?${new URLSearchParams({ dataId: q.dataId, group: q.group })}` }, `‹ ${q.dataId}`)),
    h('h1', null, `History of ${q.group} / ${q.dataId}`),
    table([{ text: 'Version', attrs: { class: 'num' } }, 'Operation', 'When', 'Source', 'User', 'MD5', ''], rows, { 'data-t': 'history' }),
    pager(page, r.pagesAvailable, (p) => goto('history', { ...q, page: p })),
    detail);
}

// ---------------------------------------------------------------- cluster

async function pageCluster(main) {
  const [node, gateway] = await Promise.all([
    api('GET', '/nacre/v1/cluster'),
    api('GET', '/nacre/gateway/status').catch(() => null),
  ]);
  const lag = node.commitIndex != null && node.lastApplied != null ? node.commitIndex - node.lastApplied : null;
  const card = (label, value, t) => h('div', { class: 'card', 'data-t': t }, h('div', { class: 'muted' }, label), h('div', { class: 'big' }, value ?? '—'));
  const parts = [
    h('h1', null, 'Cluster'),
    h('p', { class: 'muted' }, `As seen by ${node.self}${node.standalone ? ' (standalone)' : ''}, refreshed every ${REFRESH_MS / 1000} s.`),
    h('div', { class: 'cards' },
      card('Raft role', node.role, 'raft-role'), card('Term', node.term), card('Leader', node.leader, 'raft-leader'),
      card('Commit index', node.commitIndex), card('Applied', node.lastApplied), card('Apply lag', lag),
      card('Ephemeral services', node.ephemeral.services), card('Ephemeral instances', node.ephemeral.instances),
      card('Node ready', node.ready ? 'yes' : 'no')),
    h('h2', null, 'Members'),
    table(['Address', 'Probe state', 'Ready', 'In ring', 'Raft', 'Replication queue', 'Oldest unsent'], node.members.map((m) => {
      const rep = (node.replication || []).find((r) => r.peer === m.address);
      const raft = (node.raftNodes || []).find((r) => r.addr === m.address);
      return h('tr', { 'data-member': m.address },
        h('td', null, m.address, m.self ? h('span', { class: 'muted' }, ' (this node)') : ''),
        h('td', null, badge(m.state === 'UP', m.state, m.state, m.state === 'SUSPICIOUS')),
        h('td', null, badge(m.ready, 'ready', 'not ready')),
        h('td', null, m.inRing ? 'yes' : 'no'),
        // Raft ids are 64-bit: JavaScript numbers cannot show them exactly, so they are left out.
        h('td', null, raft ? (m.address === node.leader ? 'leader' : 'voter') : '—'),
        h('td', { class: 'num' }, rep ? rep.queueDepth : ''),
        h('td', { class: 'num' }, rep && rep.queueDepth ? `${rep.lagMs} ms` : ''));
    }), { 'data-t': 'members' }),
    h('p', { class: 'muted' }, 'Which node owns each service is shown on the Services page.'),
  ];
  if (gateway && gateway.nodeViews && gateway.nodeViews.length) {
    parts.push(h('h2', null, 'Every node’s own view'),
      table(['Node', 'Ready', 'Raft role', 'Term', 'Leader', { text: 'Commit', attrs: { class: 'num' } }, { text: 'Applied', attrs: { class: 'num' } },
        { text: 'Apply lag', attrs: { class: 'num' } }, { text: 'Ephemeral instances', attrs: { class: 'num' } }, { text: 'Unsent to peers', attrs: { class: 'num' } }],
      gateway.nodeViews.map((v) => v.error
        ? h('tr', { 'data-node-view': v.self }, h('td', null, v.self), h('td', { colspan: 9 }, badge(false, '', `no answer: ${v.error}`)))
        : h('tr', { 'data-node-view': v.self },
          h('td', null, v.self), h('td', null, badge(v.ready, 'ready', 'not ready')), h('td', null, v.role), h('td', null, v.term),
          h('td', null, v.leader || '—'), h('td', { class: 'num' }, v.commitIndex), h('td', { class: 'num' }, v.lastApplied),
          h('td', { class: 'num' }, v.commitIndex != null && v.lastApplied != null ? v.commitIndex - v.lastApplied : ''),
          h('td', { class: 'num' }, v.ephemeral ? v.ephemeral.instances : ''),
          h('td', { class: 'num' }, (v.replication || []).reduce((n, r) => n + r.queueDepth, 0)))), { 'data-t': 'node-views' }));
  }
  if (gateway) {
    const c = gateway.cache;
    parts.push(h('h2', null, 'Gateway'),
      h('div', { class: 'cards' },
        card('Cache hit rate', c.enabled ? `${(c.hitRate * 100).toFixed(1)} %` : 'off', 'cache-hit-rate'),
        card('Cache hits / misses', `${c.hits} / ${c.misses}`), card('Services cached', c.services),
        card('Config listeners held', gateway.configs.holdsListeners ? gateway.configs.listeners : 'passed to nodes'),
        card('Config md5s known', gateway.configs.keys)),
      table(['Node', 'Address', 'In rotation', 'Feed', 'Feed lag'], gateway.nodes.map((n) => h('tr', { 'data-gateway-node': n.name },
        h('td', null, n.name), h('td', null, n.address),
        h('td', null, badge(n.usable, 'yes', 'no')),
        h('td', null, badge(n.feedFollowed, 'followed', 'not followed')),
        h('td', { class: 'num' }, `${n.feedLagMs} ms`))), { 'data-t': 'gateway-nodes' }));
  }
  main.replaceChildren(...parts);
}

// ---------------------------------------------------------------- router

const PAGES = {
  services: pageServices,
  service: pageService,
  namespaces: pageNamespaces,
  configs: pageConfigs,
  config: pageConfig,
  history: pageHistory,
  cluster: pageCluster,
  login: pageLogin,
};

let drawing = 0;

async function route() {
  clearInterval(state.timer);
  state.timer = null;
  const { page, q } = parseHash();
  const draw = PAGES[page] || pageServices;
  document.querySelectorAll('header nav a').forEach((a) => a.classList.toggle('active', a.dataset.nav === page));
  const main = document.getElementById('main');
  const mine = ++drawing;
  const run = async () => {
    // A page left while it loads must not draw over the next one.
    const target = h('div');
    try {
      await draw(target, q);
      if (mine === drawing) main.replaceChildren(...target.childNodes);
    } catch (e) {
      if (mine === drawing) {
        flash(e.message || String(e), true);
        if (!main.childElementCount) main.replaceChildren(h('p', null, 'Could not load this page.'));
      }
    }
  };
  await run();
  if (page === 'cluster') state.timer = setInterval(() => { if (mine === drawing) run(); }, REFRESH_MS);
}

document.getElementById('namespace').addEventListener('change', (e) => {
  state.ns = e.target.value;
  localStorage.setItem('nacre.namespace', state.ns);
  const { page } = parseHash();
  goto(['service', 'config', 'history'].includes(page) ? (page === 'service' ? 'services' : 'configs') : page);
  route();
});
window.addEventListener('hashchange', route);
// A message belongs to the page it was shown on: leaving through the menu clears it (an
// action's own navigation keeps its "saved" message).
document.querySelectorAll('header nav a').forEach((a) => a.addEventListener('click', () => flash('')));
drawWho();
loadNamespaces().then(route);
