// Projects: keys, time zones, access, suppressed end users, names blocked at ingestion, and
// retention policies.

import { api, fieldError, h, rerender, setMain, showError, state } from './core.js';
import { utc } from './format.js';

export async function projectsPage() {
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
  if (admin) parts.push(await blockLists());
  if (admin) parts.push(await retentionPolicies());
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
      await rerender();
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
        if (a.status === 204) rerender();
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

const BLOCK_KINDS = [['event_type', 'Event type'], ['event_property', 'Event property'],
  ['user_property', 'User property'], ['group_property', 'Group property']];

/** Names blocked at ingestion, per project: blocked events are accepted and never stored,
 *  blocked keys are taken out of events and profiles. Admins add and lift them. */
async function blockLists() {
  const section = h('section', { class: 'card' }, h('h2', {}, 'Blocked at ingestion'),
    h('p', { class: 'hint' }, 'Events of a blocked type get a 200 and are never stored; blocked property keys are taken out of events and profiles. A deletion task can add what it deletes.'));
  const rows = [];
  for (const p of state.projects) {
    const r = await api('GET', `/api/v1/projects/${p.id}/blocks`);
    for (const b of r.status === 200 ? r.data.blocks : []) {
      const lift = h('button', { type: 'button', 'aria-label': `Lift block ${b.kind} ${b.name}` }, 'Lift');
      lift.addEventListener('click', async () => {
        const a = await api('DELETE', `/api/v1/projects/${p.id}/blocks/${b.kind}/${encodeURIComponent(b.name)}`);
        if (a.status === 204) rerender();
      });
      rows.push(h('tr', {}, h('td', {}, p.name), h('td', {}, b.kind), h('td', {}, h('code', {}, b.name)),
        h('td', {}, utc(b.created_at)), h('td', {}, b.created_by), h('td', {}, lift)));
    }
  }
  section.append(rows.length
    ? h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Blocked names' },
      h('thead', {}, h('tr', {}, ['Project', 'Kind', 'Name', 'Since', 'Blocked by', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows)))
    : h('p', { class: 'muted' }, 'None.'));
  const err = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { novalidate: true },
    h('div', { class: 'row' },
      h('div', {}, h('label', { for: 'block-project' }, 'Project'),
        h('select', { id: 'block-project' }, state.projects.map((p) => h('option', { value: String(p.id) }, p.name)))),
      h('div', {}, h('label', { for: 'block-kind' }, 'Kind'),
        h('select', { id: 'block-kind', 'data-field': 'kind' }, BLOCK_KINDS.map(([v, t]) => h('option', { value: v }, t)))),
      h('div', {}, h('label', { for: 'block-name' }, 'Name to block'),
        h('input', { id: 'block-name', type: 'text', maxlength: 1024, 'data-field': 'names', 'data-error-id': 'block-name-error' }),
        fieldError('block-name'))),
    err, h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Block')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const project = form.querySelector('#block-project').value;
    const r = await api('POST', `/api/v1/projects/${project}/blocks`,
      { kind: form.querySelector('#block-kind').value, names: [form.querySelector('#block-name').value] });
    if (r.status !== 201) return showError(form, r.data, err);
    rerender();
  });
  section.append(form);
  return section;
}

/** Retention policies, per project: once a day each becomes an ordinary deletion task (on
 *  the home page) over the events uploaded before its cutoff. The form previews exactly
 *  what a task would delete today. */
async function retentionPolicies() {
  const section = h('section', { class: 'card' }, h('h2', {}, 'Retention policies'),
    h('p', { class: 'hint' }, 'Events uploaded more than N whole UTC days before today are deleted by a daily task, listed on the home page like any other.'));
  const rows = [];
  for (const p of state.projects) {
    const r = await api('GET', `/api/v1/projects/${p.id}/retention`);
    for (const x of r.status === 200 ? r.data.policies : []) {
      const remove = h('button', { type: 'button', 'aria-label': `Remove retention policy ${x.id}` }, 'Remove');
      remove.addEventListener('click', async () => {
        const a = await api('DELETE', `/api/v1/projects/${p.id}/retention/${x.id}`);
        if (a.status === 204) rerender();
      });
      rows.push(h('tr', {}, h('td', {}, p.name), h('td', {}, `${x.days} days`),
        h('td', {}, x.event_types ? x.event_types.join(', ') : 'all events'),
        h('td', {}, x.checked_day ?? 'not yet'), h('td', {}, x.created_by), h('td', {}, remove)));
    }
  }
  section.append(rows.length
    ? h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Retention policies' },
      h('thead', {}, h('tr', {}, ['Project', 'Keep', 'Events', 'Last checked', 'Created by', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows)))
    : h('p', { class: 'muted' }, 'None.'));
  const err = h('p', { class: 'error', role: 'alert' });
  const shown = h('p', { 'aria-live': 'polite', id: 'retention-preview' });
  const body = () => {
    const types = form.querySelector('#retention-types').value.split(',').map((t) => t.trim()).filter(Boolean);
    return { days: Number(form.querySelector('#retention-days').value), event_types: types.length ? types : null };
  };
  const project = () => form.querySelector('#retention-project').value;
  const previewButton = h('button', { type: 'button' }, 'Preview');
  const form = h('form', { novalidate: true },
    h('div', { class: 'row' },
      h('div', {}, h('label', { for: 'retention-project' }, 'Project'),
        h('select', { id: 'retention-project' }, state.projects.map((p) => h('option', { value: String(p.id) }, p.name)))),
      h('div', {}, h('label', { for: 'retention-days' }, 'Keep events (days)'),
        h('input', { id: 'retention-days', type: 'number', min: 1, 'data-field': 'days', 'data-error-id': 'retention-days-error' }),
        fieldError('retention-days')),
      h('div', {}, h('label', { for: 'retention-types' }, 'Only these event types (comma-separated; empty: all)'),
        h('input', { id: 'retention-types', type: 'text', 'data-field': 'event_types', 'data-error-id': 'retention-types-error' }),
        fieldError('retention-types'))),
    shown, err, h('div', { class: 'actions' }, previewButton, h('button', { type: 'submit' }, 'Add policy')));
  previewButton.addEventListener('click', async () => {
    const r = await api('POST', `/api/v1/projects/${project()}/retention/preview`, body());
    if (r.status !== 200) return showError(form, r.data, err);
    shown.textContent = `Today its task would delete ${r.data.totals.events_deleted} events uploaded before ${r.data.cutoff} UTC.`;
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const r = await api('POST', `/api/v1/projects/${project()}/retention`, body());
    if (r.status !== 201) return showError(form, r.data, err);
    rerender();
  });
  section.append(form);
  return section;
}
