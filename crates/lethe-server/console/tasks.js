// Deletion tasks: the queue on the home page, the deletion settings, the audit.

import { api, h, setMain, state } from './core.js';
import { num, utc } from './format.js';

const REFRESH_MS = 2000;

export function projectName(id) {
  return state.projects.find((p) => p.id === id)?.name ?? `#${id}`;
}

/** A clause's `where`, in words; a completed task's values are redacted (digests only). */
function where(w) {
  if (!w) return '';
  const kind = { event: 'event property', user: 'user property', built_in: '' }[w.property.type];
  const values = w.values?.length ? ` ${w.values.map((v) => JSON.stringify(v)).join(' or ')}`
    : w.value_digests?.length ? ` (${w.value_digests.length} value(s), redacted)` : '';
  return ` where ${kind ? kind + ' ' : ''}${w.property.name} ${w.op}${values}`;
}

/** One line saying what a task removes. */
export function summary(spec) {
  const types = (t) => (t ? ` on ${t.join(', ')}` : ' on all events');
  return (spec?.clauses || []).map((c) => {
    switch (c.kind) {
      case 'event': return `events ${c.event_types.join(', ')}${where(c.where)}`;
      case 'event_property': return `event properties ${c.properties.join(', ')}${types(c.event_types)}${where(c.where)}`;
      case 'user_property': return `user properties ${c.properties.join(', ')}${types(c.event_types)}${where(c.where)}${c.from_profiles ? ' (and profiles)' : ''}`;
      case 'group_property': return `group properties ${c.properties.join(', ')}${types(c.event_types)}${where(c.where)}${c.from_profiles ? ' (and groups)' : ''}`;
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

export function counts(t) {
  const r = t.result;
  if (!r) return h('td', { class: 'muted' }, t.status === 'completed' ? '—' : `preview: ${num(t.preview?.totals?.events_deleted)} events`);
  return h('td', {},
    `${num(r.events_deleted)} events deleted`,
    h('br'), `${num(propertyValues(r))} property values removed`,
    h('br'), h('a', { href: `/api/v1/deletion-tasks/${t.id}/receipt`, download: `lethe-receipt-${t.id}.json` }, 'Signed receipt'));
}

/** Property values of every kind a task removes. */
export function propertyValues(c) {
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

export async function homePage() {
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
export function settingsNav() {
  const item = (href, text) => h('a', { href, 'data-nav': true, 'aria-current': location.pathname === href ? 'page' : false }, text);
  return h('nav', { 'aria-label': 'Organization settings', class: 'subnav' },
    h('span', { class: 'muted' }, 'Organization settings: '),
    item('/settings/deletion', 'Self Service Data Deletion'), ' · ', item('/settings/webhooks', 'Webhooks'),
    ' · ', item('/settings/audit', 'Audit log'));
}

export async function auditPage() {
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

export async function deletionSettingsPage() {
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
