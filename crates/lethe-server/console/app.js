// lethe console: a single-page app over the management API. Every change goes through the
// same endpoints a script uses; the session lives in an HttpOnly cookie and state-changing
// requests carry the CSRF token. Page text is built with DOM nodes, never HTML strings.

const MAX_CLAUSES = 5;
const REFRESH_MS = 2000;
const state = { user: null, csrf: null, projects: [], timer: null };

// ---------------------------------------------------------------- helpers

/** Builds an element: h('p', {class: 'x'}, 'text', child). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const fmt = new Intl.NumberFormat('en-US');
const num = (n) => fmt.format(n ?? 0);

/** `2026-01-31 12:00 UTC` from an RFC 3339 time or epoch ms. */
function utc(t) {
  if (t === null || t === undefined || t === '') return '—';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

let uid = 0;
const nextId = (p) => `${p}-${++uid}`;

/** Calls the API; answers {status, data}. A lost session goes back to sign-in. */
async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  const res = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const text = await res.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  if (res.status === 401 && path !== '/api/v1/auth/session') {
    state.user = null;
    go('/signin?next=' + encodeURIComponent(location.pathname));
  }
  return { status: res.status, data };
}

function setMain(title, ...children) {
  document.title = `${title} · lethe`;
  const main = document.getElementById('main');
  main.className = '';
  main.replaceChildren(...children);
  return main;
}

function fieldError(id) {
  return h('p', { class: 'error', id: `${id}-error`, role: 'alert' });
}

/** Shows an API error next to the field it names (or in `fallback`). */
function showError(form, data, fallback) {
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  for (const el of form.querySelectorAll('.error')) el.textContent = '';
  const message = data?.error || 'Something went wrong.';
  const field = data?.field;
  const target = field && form.querySelector(`[data-field="${CSS.escape(field)}"]`);
  if (target) {
    target.setAttribute('aria-invalid', 'true');
    const err = form.querySelector(`#${target.dataset.errorId}`);
    if (err) err.textContent = message + (data.unknown ? `: ${data.unknown.join(', ')}` : '');
    (target.matches('input,select') ? target : target.querySelector('input,select,button'))?.focus();
  } else {
    fallback.textContent = message;
  }
}

// ---------------------------------------------------------------- routing

const routes = {
  '/signin': signIn,
  '/': home,
  '/settings/deletion': deletionSettings,
  '/settings/deletion/new': newTask,
  '/settings/audit': audit,
  '/projects': projects,
  '/data': data,
  '/users': users,
};

function go(path) {
  history.pushState({}, '', path);
  render();
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-nav]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey) return;
  e.preventDefault();
  go(a.getAttribute('href'));
});
window.addEventListener('popstate', render);

async function render() {
  clearTimeout(state.timer);
  const path = location.pathname;
  if (path !== '/signin' && !state.user) {
    const me = await api('GET', '/api/v1/me');
    if (me.status !== 200) return;
    state.user = me.data;
    state.csrf = me.data.csrf_token;
  }
  if (state.user) {
    const p = await api('GET', '/api/v1/projects');
    state.projects = p.status === 200 ? p.data : [];
  }
  header();
  const page = routes[path] || notFound;
  await page();
  document.getElementById('main').focus({ preventScroll: true });
}

function header() {
  const top = document.getElementById('top');
  if (!state.user) { top.hidden = true; return; }
  const admin = state.user.role === 'admin';
  const link = (href, text, section = href) => h('a', {
    href, 'data-nav': true,
    'aria-current': (location.pathname === href || (href !== '/' && location.pathname.startsWith(section))) ? 'page' : false,
  }, text);
  top.replaceChildren(
    h('a', { class: 'brand', href: '/', 'data-nav': true }, 'lethe'),
    h('nav', { 'aria-label': 'Main' },
      link('/', 'Home'), link('/data', 'Data'), link('/projects', 'Projects'),
      admin && link('/users', 'Users'),
      admin && link('/settings/deletion', 'Organization settings', '/settings')),
    h('div', { class: 'who' },
      h('span', {}, `${state.user.email} (${state.user.role})`),
      h('button', { type: 'button', onclick: signOut }, 'Sign out')),
  );
  top.hidden = false;
}

function notFound() {
  setMain('Not found', h('h1', {}, 'Page not found'), h('p', {}, h('a', { href: '/', 'data-nav': true }, 'Back to the home page')));
}

// ---------------------------------------------------------------- sign-in

function signIn() {
  document.getElementById('top').hidden = true;
  const err = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'card', novalidate: true },
    h('label', { for: 'email' }, 'Email'),
    h('input', { id: 'email', type: 'email', autocomplete: 'username', required: true, 'data-field': 'email', 'data-error-id': 'email-error' }),
    fieldError('email'),
    h('label', { for: 'password' }, 'Password'),
    h('input', { id: 'password', type: 'password', autocomplete: 'current-password', required: true, 'data-field': 'password', 'data-error-id': 'password-error' }),
    fieldError('password'),
    err,
    h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Sign in')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const r = await api('POST', '/api/v1/auth/session', {
      email: form.querySelector('#email').value, password: form.querySelector('#password').value,
    });
    if (r.status !== 200) return showError(form, r.data, err);
    state.user = r.data.user;
    state.csrf = r.data.csrf_token;
    const next = new URLSearchParams(location.search).get('next');
    go(next && next.startsWith('/') && !next.startsWith('//') ? next : '/');
  });
  setMain('Sign in', h('h1', {}, 'Sign in to lethe'), form).className = 'narrow';
}

async function signOut() {
  await api('DELETE', '/api/v1/auth/session');
  state.user = null;
  state.csrf = null;
  go('/signin');
}

// ---------------------------------------------------------------- tasks

function projectName(id) {
  return state.projects.find((p) => p.id === id)?.name ?? `#${id}`;
}

/** One line saying what a task removes. */
function summary(spec) {
  const types = (t) => (t ? ` on ${t.join(', ')}` : ' on all events');
  return (spec?.clauses || []).map((c) => {
    switch (c.kind) {
      case 'event': return `events ${c.event_types.join(', ')}`;
      case 'event_property': return `event properties ${c.properties.join(', ')}${types(c.event_types)}`;
      case 'user_property': return `user properties ${c.properties.join(', ')}${types(c.event_types)}${c.from_profiles ? ' (and profiles)' : ''}`;
      case 'group_property': return `group properties ${c.properties.join(', ')}${types(c.event_types)}${c.from_profiles ? ' (and groups)' : ''}`;
      case 'users': return `all data of ${c.amplitude_ids.length} end user(s) (privacy request)`;
      default: return c.kind;
    }
  }).join('; ');
}

function range(spec) {
  if (!spec?.start) return '—';
  if (spec.start.startsWith('1970-')) return 'all time';
  return `${utc(spec.start)} – ${utc(spec.end)}`;
}

function statusCell(t) {
  const cell = h('td', {}, h('span', { class: `badge ${t.status}` }, t.status));
  if (t.status === 'running' && t.progress) {
    const { partitions_done: done, partitions_total: total } = t.progress;
    cell.append(h('div', {},
      h('progress', { max: Math.max(total, 1), value: done, 'aria-label': `Progress of ${t.name}` }),
      ` ${done}/${total} days`));
  } else if (t.status === 'running') {
    cell.append(h('div', { class: 'muted' }, 'starting…'));
  }
  if (t.status === 'queued' && t.queue_position !== null) {
    cell.append(h('div', { class: 'muted' }, t.queue_position === 0 ? 'next in queue' : `#${t.queue_position + 1} in queue`));
  }
  if (t.status === 'failed' && t.error) cell.append(h('div', { class: 'error' }, t.error));
  return cell;
}

function counts(t) {
  const r = t.result;
  if (!r) return h('td', { class: 'muted' }, t.status === 'completed' ? '—' : `preview: ${num(t.preview?.totals?.events_deleted)} events`);
  return h('td', {},
    `${num(r.events_deleted)} events deleted`,
    h('br'), `${num(propertyValues(r))} property values removed`);
}

/** Property values of every kind a task removes. */
function propertyValues(c) {
  return c.event_property_values_removed + c.user_property_values_removed + (c.group_property_values_removed || 0);
}

const TASK_COLUMNS = ['Name', 'Project', 'Time range (upload time, UTC)', 'What', 'Status', 'Submitted by', 'Submitted', 'Finished', 'Result'];

function taskTable(tasks) {
  if (!tasks.length) return h('p', { class: 'muted' }, 'No deletion tasks yet.');
  return h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Deletion tasks', class: 'cards' },
    h('thead', {}, h('tr', {}, TASK_COLUMNS.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, tasks.map((t) => {
      const row = h('tr', { 'data-task': t.id },
        h('td', {}, t.name), h('td', {}, projectName(t.project_id)), h('td', {}, range(t.spec)),
        h('td', {}, summary(t.spec)), statusCell(t), h('td', {}, t.created_by),
        h('td', {}, utc(t.created_at)), h('td', {}, utc(t.finished_at)), counts(t));
      // On a narrow window each row becomes a card; the labels come from here.
      [...row.children].forEach((td, i) => td.setAttribute('data-label', TASK_COLUMNS[i]));
      return row;
    }))));
}

/** The task list; refreshes itself while any task is queued or running. */
async function taskSection(container) {
  const r = await api('GET', '/api/v1/deletion-tasks');
  if (r.status !== 200) return;
  const live = r.data.some((t) => t.status === 'queued' || t.status === 'running');
  container.replaceChildren(taskTable(r.data),
    h('p', { class: 'muted hint', 'aria-live': 'polite' }, live ? 'Updating automatically while tasks run.' : ''));
  if (live && document.body.contains(container)) {
    state.timer = setTimeout(() => taskSection(container), REFRESH_MS);
  }
}

async function home() {
  const list = h('div', { id: 'tasks' });
  const admin = state.user.role === 'admin';
  setMain('Home',
    h('h1', {}, 'Deletion tasks'),
    h('p', { class: 'muted' }, 'Every deletion task of the organization and its status. Submitted tasks cannot be cancelled.'),
    admin && h('p', {}, h('a', { class: 'button primary', href: '/settings/deletion/new', 'data-nav': true }, 'New Deletion Task')),
    list);
  await taskSection(list);
}

/** The sub-navigation of Organization settings. */
function settingsNav() {
  const item = (href, text) => h('a', { href, 'data-nav': true, 'aria-current': location.pathname === href ? 'page' : false }, text);
  return h('nav', { 'aria-label': 'Organization settings', class: 'subnav' },
    h('span', { class: 'muted' }, 'Organization settings: '),
    item('/settings/deletion', 'Self Service Data Deletion'), ' · ', item('/settings/audit', 'Audit log'));
}

async function audit() {
  const r = await api('GET', '/api/v1/audit');
  if (r.status !== 200) return setMain('Audit log', settingsNav(), h('h1', {}, 'Audit log'), h('p', { class: 'error' }, r.data?.error));
  const rows = [...r.data].reverse().map((e) => h('tr', {},
    h('td', {}, utc(e.at)), h('td', {}, e.actor), h('td', {}, h('code', {}, e.action)),
    h('td', {}, e.task_id ?? '—'), h('td', { class: 'mono' }, JSON.stringify(e.detail))));
  setMain('Audit log', settingsNav(), h('h1', {}, 'Audit log'),
    h('p', { class: 'muted' }, 'Every deletion task, privacy request and user change, newest first. Entries hold names, ids and counts, never event or property values, and cannot be changed or removed.'),
    h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Audit log' },
      h('thead', {}, h('tr', {}, ['When', 'Who', 'Action', 'Task', 'Detail'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows))));
}

async function deletionSettings() {
  const list = h('div');
  setMain('Self Service Data Deletion',
    settingsNav(),
    h('h1', {}, 'Self Service Data Deletion'),
    h('div', { class: 'notice' },
      h('p', {}, 'Permanently remove events or properties from a project, for a range of server upload time (UTC). ',
        'A task is verified before submission; once submitted it cannot be cancelled, and when it completes the data is gone from disk.'),
      h('p', {}, 'To erase everything about an end user (GDPR/CCPA), use the User Privacy API instead.')),
    h('p', {}, h('a', { class: 'button primary', href: '/settings/deletion/new', 'data-nav': true }, 'New Deletion Task')),
    h('h2', {}, 'Tasks'), list);
  await taskSection(list);
}

// ---------------------------------------------------------------- the wizard

/** A searchable multi-select of catalog names with their event counts. */
function picker({ label, entries, selected, field, errorId, onchange }) {
  const id = nextId('picker');
  const search = h('input', { type: 'search', id, placeholder: 'Search…', 'aria-controls': `${id}-list`, autocomplete: 'off' });
  const chips = h('div', { class: 'chips', 'aria-live': 'polite' });
  const list = h('div', { class: 'options', id: `${id}-list`, role: 'group', 'aria-label': label });
  const draw = () => {
    const q = search.value.trim().toLowerCase();
    list.replaceChildren(...entries.filter((e) => e.name.toLowerCase().includes(q)).map((e) => {
      const box = h('input', { type: 'checkbox', value: e.name, checked: selected.has(e.name) });
      box.addEventListener('change', () => {
        box.checked ? selected.add(e.name) : selected.delete(e.name);
        drawChips();
        onchange?.();
      });
      return h('label', {}, box, h('span', {}, e.name), h('span', { class: 'count' }, `${num(e.event_count)} events`));
    }));
    if (!list.children.length) list.append(h('p', { class: 'muted hint' }, entries.length ? 'No name matches.' : 'Nothing in this project yet.'));
  };
  const drawChips = () => chips.replaceChildren(...[...selected].map((n) => h('span', { class: 'chip' }, n)));
  search.addEventListener('input', draw);
  draw();
  drawChips();
  return h('div', { class: 'picker', 'data-field': field, 'data-error-id': errorId },
    h('label', { for: id }, label), search, list, chips, fieldError(errorId.replace(/-error$/, '')));
}

function clauseEditor(wizard, clause, index) {
  const catalog = wizard.catalog;
  const err = `clause${index}-names-error`;
  const typesErr = `clause${index}-types-error`;
  const kindId = nextId('kind');
  const box = h('fieldset', { 'data-clause': index });
  const draw = () => {
    const property = clause.kind !== 'event';
    const entries = {
      event: catalog.event_types, event_property: catalog.event_properties,
      user_property: catalog.user_properties, group_property: catalog.group_properties || [],
    }[clause.kind];
    const kind = h('select', { id: kindId },
      h('option', { value: 'event', selected: clause.kind === 'event' }, 'Event'),
      h('option', { value: 'event_property', selected: clause.kind === 'event_property' }, 'Event property'),
      h('option', { value: 'user_property', selected: clause.kind === 'user_property' }, 'User property'),
      h('option', { value: 'group_property', selected: clause.kind === 'group_property' }, 'Group property'));
    kind.addEventListener('change', () => {
      clause.kind = kind.value;
      clause.names = new Set();
      clause.types = new Set();
      draw();
      box.querySelector('select').focus();
    });
    const parts = [
      h('legend', {}, `Clause ${index + 1}`),
      h('div', { class: 'row' }, h('div', {}, h('label', { for: kindId }, 'Type of data'), kind)),
      picker({
        label: {
          event: 'Events to delete (with all their properties)', event_property: 'Event properties to remove',
          user_property: 'User properties to remove', group_property: 'Group properties to remove',
        }[clause.kind],
        entries, selected: clause.names, field: `clauses[${index}].${property ? 'properties' : 'event_types'}`, errorId: err,
      }),
    ];
    if (property) {
      const name = nextId('scope');
      const radio = (value, text) => {
        const r = h('input', { type: 'radio', name, value, checked: clause.scope === value });
        r.addEventListener('change', () => { clause.scope = value; draw(); });
        return h('label', {}, r, text);
      };
      parts.push(h('div', { role: 'radiogroup', 'aria-label': 'Remove from', class: 'radios' },
        h('span', {}, 'Remove from:'), radio('all', 'All events'), radio('specific', 'Specific events')));
      if (clause.scope === 'specific') {
        parts.push(picker({ label: 'Only on these events', entries: catalog.event_types, selected: clause.types, field: `clauses[${index}].event_types`, errorId: typesErr }));
      }
    }
    if (clause.kind === 'user_property' || clause.kind === 'group_property') {
      const id = nextId('profiles');
      const c = h('input', { type: 'checkbox', id, checked: clause.fromProfiles });
      c.addEventListener('change', () => { clause.fromProfiles = c.checked; });
      const [where, keeper] = clause.kind === 'user_property'
        ? ['current user profiles', 'each user’s current profile'] : ['current groups', 'each group'];
      parts.push(h('div', { class: 'check' }, h('label', { for: id }, c, `Also remove from ${where}`),
        h('p', { class: 'hint' }, `Without this, events lose the property but ${keeper} keeps its value, and new events would carry it again.`)));
    }
    parts.push(h('div', { class: 'actions' }, h('button', {
      type: 'button', onclick: () => { wizard.clauses.splice(index, 1); wizard.drawClauses(); },
    }, `Remove clause ${index + 1}`)));
    box.replaceChildren(...parts);
  };
  draw();
  return box;
}

function taskBody(w) {
  const toIso = (v) => (v ? new Date(v + 'Z').toISOString() : '');
  return {
    name: w.form.querySelector('#task-name').value,
    start: toIso(w.form.querySelector('#task-start').value),
    end: toIso(w.form.querySelector('#task-end').value),
    clauses: w.clauses.map((c) => {
      const names = [...c.names];
      const types = c.scope === 'specific' ? [...c.types] : null;
      if (c.kind === 'event') return { kind: 'event', event_types: names };
      if (c.kind === 'event_property') return { kind: 'event_property', properties: names, event_types: types };
      return { kind: c.kind, properties: names, event_types: types, from_profiles: c.fromProfiles };
    }),
  };
}

function steps(current) {
  return h('ol', { class: 'steps', 'aria-label': 'Steps' },
    ['Define', 'Verify', 'Confirm'].map((s, i) => h('li', { 'aria-current': i === current ? 'step' : false }, `${i + 1}. ${s}`)));
}

/** Now, to the second, as a datetime-local value in UTC. */
function nowSecond() {
  return new Date().toISOString().slice(0, 19);
}

async function newTask() {
  const projectId = state.projects[0]?.id;
  const w = { clauses: [], catalog: null, form: null, project: projectId };
  const loadCatalog = async () => {
    const r = await api('GET', `/api/v1/projects/${w.project}/catalog`);
    w.catalog = r.status === 200 ? r.data : { event_types: [], event_properties: [], user_properties: [], group_properties: [] };
  };
  await loadCatalog();
  const project = h('select', { id: 'task-project', 'data-field': 'project', 'data-error-id': 'task-project-error' },
    state.projects.map((p) => h('option', { value: p.id }, p.name)));
  project.addEventListener('change', async () => {
    w.project = Number(project.value);
    w.clauses = [];
    await loadCatalog();
    w.drawClauses();
  });
  const now = nowSecond();
  const clauseList = h('div', { id: 'clauses' });
  const add = h('button', { type: 'button', id: 'add-clause' }, 'Add events or properties');
  const addNote = h('p', { class: 'hint', id: 'add-note' });
  const formError = h('p', { class: 'error', role: 'alert' });
  w.drawClauses = () => {
    clauseList.replaceChildren(...w.clauses.map((c, i) => clauseEditor(w, c, i)));
    const full = w.clauses.length >= MAX_CLAUSES;
    add.disabled = full;
    addNote.textContent = full ? `A task holds at most ${MAX_CLAUSES} clauses.` : `Up to ${MAX_CLAUSES} clauses (${w.clauses.length} so far).`;
  };
  add.addEventListener('click', () => {
    if (w.clauses.length >= MAX_CLAUSES) return;
    w.clauses.push({ kind: 'event', names: new Set(), types: new Set(), scope: 'all', fromProfiles: false });
    w.drawClauses();
    clauseList.lastElementChild?.querySelector('select')?.focus();
  });
  const form = h('form', { novalidate: true },
    steps(0),
    h('div', { class: 'card' },
      h('div', { class: 'row' },
        h('div', {}, h('label', { for: 'task-name' }, 'Task name'),
          h('input', { id: 'task-name', type: 'text', maxlength: 200, required: true, 'data-field': 'name', 'data-error-id': 'task-name-error' }),
          fieldError('task-name')),
        h('div', {}, h('label', { for: 'task-project' }, 'Project'), project, fieldError('task-project')))),
    h('div', { class: 'card' },
      h('h2', {}, 'Time range'),
      h('p', { class: 'hint' }, `Server upload time, in UTC. The end cannot be later than now (${now.replace('T', ' ')} UTC): data that arrives after you submit is never deleted.`),
      h('div', { class: 'row' },
        h('div', {}, h('label', { for: 'task-start' }, 'Start (UTC)'),
          h('input', { id: 'task-start', type: 'datetime-local', step: 1, max: now, 'data-field': 'start', 'data-error-id': 'task-start-error' }),
          fieldError('task-start')),
        h('div', {}, h('label', { for: 'task-end' }, 'End (UTC)'),
          h('input', { id: 'task-end', type: 'datetime-local', step: 1, max: now, value: now, 'data-field': 'end', 'data-error-id': 'task-end-error' }),
          fieldError('task-end')))),
    h('div', { class: 'card', 'data-field': 'clauses', 'data-error-id': 'clauses-error' },
      h('h2', {}, 'Delete'),
      clauseList, add, addNote, fieldError('clauses')),
    formError,
    h('div', { class: 'actions' },
      h('a', { class: 'button', href: '/settings/deletion', 'data-nav': true }, 'Cancel'),
      h('button', { class: 'primary', type: 'submit' }, 'Next')));
  w.form = form;
  w.drawClauses();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = taskBody(w);
    const r = await api('POST', `/api/v1/projects/${w.project}/deletion-tasks/preview`, body);
    if (r.status !== 200) return showError(form, r.data, formError);
    verify(w, body, r.data);
  });
  setMain('New Deletion Task', h('p', { class: 'muted' }, 'Organization settings › Self Service Data Deletion'),
    h('h1', {}, 'New Deletion Task'), form);
}

function verify(w, body, preview) {
  const row = (label, c, cls) => h('tr', { class: cls || false },
    h('th', { scope: 'row' }, label), h('td', { class: 'num' }, num(c.events_deleted)),
    h('td', { class: 'num' }, num(c.event_property_values_removed)), h('td', { class: 'num' }, num(c.user_property_values_removed)),
    h('td', { class: 'num' }, num(c.group_property_values_removed)));
  const clauseText = (c) => summary({ clauses: [c] });
  const section = h('div', {},
    steps(1),
    h('div', { class: 'card' },
      h('h2', {}, `Verify “${body.name}”`),
      h('p', {}, `Project ${projectName(w.project)}, ${utc(body.start)} – ${utc(body.end)}. These are exact counts of what the task would remove now.`),
      h('div', { class: 'table-wrap' }, h('table', { id: 'verify-counts', 'aria-label': 'What the task removes' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Clause'), h('th', { scope: 'col', class: 'num' }, 'Events deleted'),
          h('th', { scope: 'col', class: 'num' }, 'Event property values'), h('th', { scope: 'col', class: 'num' }, 'User property values'),
          h('th', { scope: 'col', class: 'num' }, 'Group property values'))),
        h('tbody', {}, body.clauses.map((c, i) => row(`${i + 1}. ${clauseText(c)}`, preview.clauses[i])),
          row('Total', preview.totals, 'total')))),
      h('p', { class: 'hint' }, `Rewrites ${num(preview.rewrite.segments)} segment file(s) in ${num(preview.rewrite.partitions)} day(s). A value on an event that the task deletes counts once, as the event.`)),
    h('div', { class: 'card' },
      h('h2', {}, 'Sample of affected events'),
      preview.samples.length ? h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Event', 'Uploaded (UTC)', 'Event uuid'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, preview.samples.map((s) => h('tr', {}, h('td', {}, s.event_type), h('td', {}, s.server_upload_time), h('td', { class: 'mono' }, s.uuid))))))
        : h('p', { class: 'muted' }, 'Nothing matches: the task would remove nothing.')),
    h('div', { class: 'actions' },
      h('button', { type: 'button', onclick: () => { setMain('New Deletion Task', h('h1', {}, 'New Deletion Task'), w.form); } }, 'Back'),
      h('button', { type: 'button', class: 'primary', id: 'verify-next', onclick: () => confirmTask(w, body, preview, section) }, 'Next')));
  setMain('Verify deletion task', h('h1', {}, 'New Deletion Task'), section);
}

function confirmTask(w, body, preview, verifySection) {
  const input = h('input', { id: 'confirm-name', type: 'text', autocomplete: 'off', 'aria-describedby': 'confirm-hint', 'data-field': 'confirm', 'data-error-id': 'confirm-name-error' });
  const del = h('button', { type: 'submit', class: 'danger', disabled: true }, 'Delete');
  input.addEventListener('input', () => { del.disabled = input.value !== body.name; });
  const err = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { novalidate: true },
    steps(2),
    h('div', { class: 'card' },
      h('div', { class: 'warning', role: 'note' },
        h('p', {}, h('strong', {}, 'This cannot be undone or cancelled. '),
          `Submitting queues the task; it will delete ${num(preview.totals.events_deleted)} events and remove `,
          `${num(propertyValues(preview.totals))} property values from ${projectName(w.project)}, permanently.`)),
      h('label', { for: 'confirm-name' }, 'Type the task name to confirm'),
      h('p', { class: 'hint', id: 'confirm-hint' }, `Type: ${body.name}`),
      input, fieldError('confirm-name')),
    err,
    h('div', { class: 'actions' },
      h('button', { type: 'button', onclick: () => setMain('Verify deletion task', h('h1', {}, 'New Deletion Task'), verifySection) }, 'Back'),
      del));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (input.value !== body.name) return;
    del.disabled = true;
    const r = await api('POST', `/api/v1/projects/${w.project}/deletion-tasks`, { ...body, confirm: 'DELETE' });
    if (r.status !== 202) { del.disabled = false; return showError(form, r.data, err); }
    go('/');
  });
  setMain('Confirm deletion task', h('h1', {}, 'New Deletion Task'), form);
  input.focus();
}

// ---------------------------------------------------------------- projects

async function projects() {
  const admin = state.user.role === 'admin';
  const table = h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Projects' },
    h('thead', {}, h('tr', {}, ['Name', 'Id', 'API key', 'Chart time zone', admin && 'Secret key', 'Created'].filter(Boolean).map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, state.projects.map((p) => {
      const secret = h('td', {});
      if (admin) secret.append(rotateButton(p, secret));
      return h('tr', {}, h('td', {}, p.name), h('td', {}, String(p.id)), h('td', {}, h('code', {}, p.api_key)),
        h('td', {}, admin ? timeZoneForm(p) : p.time_zone), admin && secret, h('td', {}, utc(p.created_at)));
    }))));
  const parts = [h('h1', {}, 'Projects'), table];
  if (admin) parts.push(await projectAccess());
  if (admin) parts.push(await suppressions());
  if (admin) {
    const err = h('p', { class: 'error', role: 'alert' });
    const created = h('div', { 'aria-live': 'polite' });
    const form = h('form', { class: 'card', novalidate: true },
      h('h2', {}, 'Create a project'),
      h('div', { class: 'row' }, h('div', {}, h('label', { for: 'project-name' }, 'Project name'),
        h('input', { id: 'project-name', type: 'text', maxlength: 200, 'data-field': 'name', 'data-error-id': 'project-name-error' }),
        fieldError('project-name'))),
      err, h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create project')), created);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const r = await api('POST', '/api/v1/projects', { name: form.querySelector('#project-name').value });
      if (r.status !== 201) return showError(form, r.data, err);
      await render();
      document.getElementById('main').append(h('div', { class: 'notice', role: 'status' },
        `Created ${r.data.name}. API key `, h('code', {}, r.data.api_key), ', secret key ', h('code', {}, r.data.secret_key)));
    });
    parts.push(form);
  }
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  parts.push(h('datalist', { id: 'time-zones' }, ['UTC', ...zones].map((z) => h('option', { value: z }))));
  setMain('Projects', ...parts);
}

/** The time zone a project's segmentation counts days in (event time, as in Amplitude).
 *  Deletion tasks and the volume chart keep using server upload time in UTC. */
function timeZoneForm(p) {
  const id = `tz-${p.id}`;
  const input = h('input', { id, type: 'text', value: p.time_zone, list: 'time-zones', size: 18, 'aria-label': `Chart time zone of ${p.name}` });
  const status = h('span', { class: 'hint', role: 'status' });
  const form = h('form', { class: 'inline' }, input, h('button', { type: 'submit' }, 'Save'), status);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const r = await api('PATCH', `/api/v1/projects/${p.id}`, { time_zone: input.value.trim() });
    status.textContent = r.status === 200 ? ` saved: ${r.data.time_zone}` : ` ${r.data?.error || 'failed'}`;
    if (r.status === 200) p.time_zone = r.data.time_zone;
  });
  return form;
}

/** Secret keys are stored as digests and shown once: an administrator can only replace one,
 *  in two steps, since the old key stops working at once. */
function rotateButton(p, cell) {
  const start = h('button', { type: 'button', 'aria-label': `New secret key for ${p.name}` }, 'New secret key');
  start.addEventListener('click', () => {
    const confirmButton = h('button', { type: 'button', class: 'danger', 'aria-label': `Replace the secret key of ${p.name}` }, 'Replace: the old key stops working');
    confirmButton.addEventListener('click', async () => {
      const r = await api('POST', `/api/v1/projects/${p.id}/secret-key`, {});
      if (r.status !== 200) return cell.replaceChildren(h('span', { class: 'error', role: 'alert' }, r.data?.error || 'failed'));
      cell.replaceChildren(h('code', { 'aria-label': `New secret key of ${p.name}` }, r.data.secret_key),
        h('span', { class: 'hint' }, ' shown once: copy it now'));
    });
    cell.replaceChildren(confirmButton);
  });
  return start;
}

/** Which members and viewers reach which project (administrators reach every project). */
async function projectAccess() {
  const section = h('section', { class: 'card' }, h('h2', {}, 'Project access'),
    h('p', { class: 'hint' }, 'Members and viewers reach only the projects granted here. Members also import data; administrators reach every project.'));
  const u = await api('GET', '/api/v1/users');
  const people = (u.status === 200 ? u.data : []).filter((x) => x.role !== 'admin' && x.active);
  if (!people.length) { section.append(h('p', {}, 'No members or viewers yet: add them on the Users page.')); return section; }
  const grants = {};
  for (const p of state.projects) {
    const m = await api('GET', `/api/v1/projects/${p.id}/members`);
    for (const g of (m.status === 200 ? m.data : [])) grants[`${p.id}:${g.user.id}`] = g.role;
  }
  const status = h('p', { 'aria-live': 'polite', class: 'hint' });
  const cell = (p, person) => {
    const select = h('select', { 'aria-label': `${person.email} in ${p.name}` },
      ['none', 'viewer', 'member'].map((r) => h('option', { value: r }, r)));
    select.value = grants[`${p.id}:${person.id}`] || 'none';
    select.addEventListener('change', async () => {
      const path = `/api/v1/projects/${p.id}/members/${person.id}`;
      const r = select.value === 'none' ? await api('DELETE', path) : await api('PUT', path, { role: select.value });
      status.textContent = r.status === 204 ? `${person.email}: ${select.value} in ${p.name}` : (r.data?.error || 'failed');
    });
    return h('td', {}, select);
  };
  section.append(h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Project access' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'User'), state.projects.map((p) => h('th', { scope: 'col' }, p.name)))),
    h('tbody', {}, people.map((person) => h('tr', {}, h('td', {}, person.email), state.projects.map((p) => cell(p, person))))))), status);
  return section;
}

/** End users suppressed by privacy requests (`"suppress": true`), per project: only a hash
 *  of each user_id is kept; lifting one lets the user's events in again. */
async function suppressions() {
  const section = h('section', { class: 'card' }, h('h2', {}, 'Suppressed end users'),
    h('p', { class: 'hint' }, 'Users erased with "suppress": true through the User Privacy API. Their new events are dropped. Only a SHA-256 of each user_id is kept.'));
  const rows = [];
  for (const p of state.projects) {
    const r = await api('GET', `/api/v1/projects/${p.id}/suppressions`);
    for (const x of r.status === 200 ? r.data.suppressions : []) {
      const lift = h('button', { type: 'button', 'aria-label': `Lift suppression ${x.id}` }, 'Lift');
      lift.addEventListener('click', async () => {
        const a = await api('DELETE', `/api/v1/projects/${p.id}/suppressions/${x.id}`);
        if (a.status === 204) render();
      });
      rows.push(h('tr', {}, h('td', {}, p.name), h('td', { class: 'mono' }, x.user_id_sha256.slice(0, 16) + '…'),
        h('td', {}, utc(x.created_at)), h('td', {}, x.created_by), h('td', {}, lift)));
    }
  }
  section.append(rows.length
    ? h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Suppressed end users' },
      h('thead', {}, h('tr', {}, ['Project', 'user_id SHA-256', 'Since', 'Requested by', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows)))
    : h('p', { class: 'muted' }, 'None.'));
  return section;
}

// ---------------------------------------------------------------- data

const ymd = (d) => d.toISOString().slice(0, 10);

/** The smallest of 1, 2, 5 × 10^k that is at least `raw` (a whole number). */
function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
}

function chart(xValues, series) {
  const W = 760, H = 260, L = 56, R = 12, T = 12, B = 28;
  const step = niceStep(Math.max(1, ...series.flatMap((s) => s.values)) / 4);
  const max = step * 4;
  const x = (i) => L + (xValues.length <= 1 ? 0 : (i * (W - L - R)) / (xValues.length - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  const el = (tag, attrs, text) => {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `Daily events from ${xValues[0]} to ${xValues[xValues.length - 1]}; the table below has the numbers`);
  for (let k = 0; k <= 4; k++) {
    const v = step * k;
    svg.append(el('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }),
      el('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, num(v)));
  }
  svg.append(el('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }));
  const every = Math.max(1, Math.ceil(xValues.length / 8));
  xValues.forEach((d, i) => {
    if (i % every === 0) svg.append(el('text', { x: x(i), y: H - 8, 'text-anchor': 'middle' }, d.slice(5)));
  });
  series.forEach((s, k) => {
    svg.append(el('polyline', { class: `s${k}`, points: s.values.map((v, i) => `${x(i)},${y(v)}`).join(' ') }));
  });
  const legend = h('ul', { class: 'legend' }, series.map((s, k) => h('li', {}, h('span', { class: `swatch s${k}` }), s.label)));
  const table = h('details', {}, h('summary', {}, 'Numbers'), h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Day'), series.map((s) => h('th', { scope: 'col', class: 'num' }, s.label)))),
    h('tbody', {}, xValues.map((d, i) => h('tr', {}, h('th', { scope: 'row' }, d), series.map((s) => h('td', { class: 'num' }, num(s.values[i])))))))));
  return h('figure', { class: 'chart', id: 'volume-chart' }, svg, legend, table);
}

async function volume(projectId, from, to, types) {
  const query = (eventType) => {
    // lethe_time=upload: days of server upload time in UTC, the time deletion tasks select by.
    const q = new URLSearchParams({ e: JSON.stringify({ event_type: eventType }), m: 'totals', i: '1', start: from.replaceAll('-', ''), end: to.replaceAll('-', ''), lethe_time: 'upload' });
    return api('GET', `/api/v1/projects/${projectId}/events/segmentation?${q}`);
  };
  const answers = await Promise.all([query('_all'), ...types.map(query)]);
  const bad = answers.find((a) => a.status !== 200);
  if (bad) throw new Error(bad.data?.error || 'the query failed');
  return {
    xValues: answers[0].data.data.xValues,
    series: answers.map((a, k) => ({ label: k === 0 ? 'All events' : types[k - 1], values: a.data.data.series[0] })),
  };
}

function catalogTable(title, entries) {
  const id = nextId('filter');
  const body = h('tbody');
  const search = h('input', { type: 'search', id, placeholder: 'Filter…' });
  const draw = () => {
    const q = search.value.trim().toLowerCase();
    body.replaceChildren(...entries.filter((e) => e.name.toLowerCase().includes(q)).map((e) => h('tr', {},
      h('td', {}, e.name), h('td', { class: 'num' }, num(e.event_count)),
      h('td', { class: 'hide-narrow' }, e.first_seen ?? '—'), h('td', { class: 'hide-narrow' }, e.last_seen ?? '—'))));
  };
  search.addEventListener('input', draw);
  draw();
  return h('section', { class: 'card' }, h('h2', {}, `${title} (${entries.length})`),
    h('label', { for: id }, `Filter ${title.toLowerCase()}`), search,
    h('div', { class: 'table-wrap' }, h('table', { 'aria-label': title },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col', class: 'num' }, 'Events'),
        h('th', { scope: 'col', class: 'hide-narrow' }, 'First seen (UTC)'), h('th', { scope: 'col', class: 'hide-narrow' }, 'Last seen (UTC)'))),
      body)));
}

async function data() {
  const today = new Date();
  const monthAgo = new Date(today.getTime() - 29 * 86400000);
  const project = h('select', { id: 'data-project' }, state.projects.map((p) => h('option', { value: p.id }, p.name)));
  const from = h('input', { id: 'data-from', type: 'date', value: ymd(monthAgo), max: ymd(today) });
  const to = h('input', { id: 'data-to', type: 'date', value: ymd(today), max: ymd(today) });
  const err = h('p', { class: 'error', role: 'alert' });
  const chartBox = h('div', { 'aria-live': 'polite' });
  const catalogBox = h('div');
  const show = async () => {
    err.textContent = '';
    chartBox.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    const c = await api('GET', `/api/v1/projects/${project.value}/catalog`);
    if (c.status !== 200) { err.textContent = c.data?.error; return; }
    const top = [...c.data.event_types].sort((a, b) => b.event_count - a.event_count).slice(0, 5).map((e) => e.name);
    try {
      const v = await volume(project.value, from.value, to.value, top);
      chartBox.replaceChildren(h('h2', {}, 'Daily events by server upload time (UTC, the time deletion tasks select by, not event time): all events and the five most frequent types'), chart(v.xValues, v.series));
    } catch (e) {
      chartBox.replaceChildren();
      err.textContent = e.message;
    }
    catalogBox.replaceChildren(
      catalogTable('Event types', c.data.event_types),
      catalogTable('Event properties', c.data.event_properties),
      catalogTable('User properties', c.data.user_properties),
      catalogTable('Group properties', c.data.group_properties));
  };
  const form = h('form', { class: 'card' },
    h('div', { class: 'row' },
      h('div', {}, h('label', { for: 'data-project' }, 'Project'), project),
      h('div', {}, h('label', { for: 'data-from' }, 'From (UTC)'), from),
      h('div', {}, h('label', { for: 'data-to' }, 'To (UTC)'), to),
      h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Show'))),
    err);
  form.addEventListener('submit', (e) => { e.preventDefault(); show(); });
  setMain('Data', h('h1', {}, 'Data'), form, h('section', { class: 'card' }, chartBox), catalogBox);
  if (state.projects.length) await show();
}

// ---------------------------------------------------------------- users

async function users() {
  const r = await api('GET', '/api/v1/users');
  if (r.status !== 200) return setMain('Users', h('h1', {}, 'Users'), h('p', { class: 'error' }, r.data?.error));
  const err = h('p', { class: 'error', role: 'alert' });
  const rows = r.data.map((u) => {
    const roleId = nextId('role');
    const role = h('select', { id: roleId, 'aria-label': `Role of ${u.email}` },
      ['admin', 'member', 'viewer'].map((x) => h('option', { value: x, selected: u.role === x }, x)));
    role.addEventListener('change', async () => {
      const a = await api('PATCH', `/api/v1/users/${u.id}`, { role: role.value });
      if (a.status !== 200) { err.textContent = a.data?.error; role.value = u.role; return; }
      u.role = a.data.role;
      err.textContent = '';
    });
    const toggle = h('button', { type: 'button' }, u.active ? 'Deactivate' : 'Reactivate');
    toggle.setAttribute('aria-label', `${u.active ? 'Deactivate' : 'Reactivate'} ${u.email}`);
    toggle.addEventListener('click', async () => {
      const a = await api('PATCH', `/api/v1/users/${u.id}`, { active: !u.active });
      if (a.status !== 200) { err.textContent = a.data?.error; return; }
      users();
    });
    return h('tr', {}, h('td', {}, u.email), h('td', {}, role), h('td', {}, u.active ? 'active' : 'deactivated'),
      h('td', { class: 'hide-narrow' }, utc(u.created_at)), h('td', {}, toggle));
  });
  const form = h('form', { class: 'card', novalidate: true },
    h('h2', {}, 'Add a user'),
    h('div', { class: 'row' },
      h('div', {}, h('label', { for: 'new-email' }, 'Email'),
        h('input', { id: 'new-email', type: 'email', 'data-field': 'email', 'data-error-id': 'new-email-error' }), fieldError('new-email')),
      h('div', {}, h('label', { for: 'new-password' }, 'Initial password'),
        h('input', { id: 'new-password', type: 'password', autocomplete: 'new-password', 'data-field': 'password', 'data-error-id': 'new-password-error' }), fieldError('new-password')),
      h('div', {}, h('label', { for: 'new-role' }, 'Role'),
        h('select', { id: 'new-role', 'data-field': 'role', 'data-error-id': 'new-role-error' },
          h('option', { value: 'member' }, 'member'), h('option', { value: 'viewer' }, 'viewer'), h('option', { value: 'admin' }, 'admin')),
        fieldError('new-role'))),
    h('p', { class: 'hint' }, 'Administrators manage projects and users and create deletion tasks; members and viewers see the data and the tasks.'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add user')));
  const formErr = h('p', { class: 'error', role: 'alert' });
  form.append(formErr);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const a = await api('POST', '/api/v1/users', {
      email: form.querySelector('#new-email').value, password: form.querySelector('#new-password').value, role: form.querySelector('#new-role').value,
    });
    if (a.status !== 201) return showError(form, a.data, formErr);
    users();
  });
  setMain('Users', h('h1', {}, 'Users'), err,
    h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Users' },
      h('thead', {}, h('tr', {}, ['Email', 'Role', 'Status', 'Created', 'Access'].map((c, i) => h('th', { scope: 'col', class: i === 3 ? 'hide-narrow' : false }, c)))),
      h('tbody', {}, rows))),
    form);
}

render();
