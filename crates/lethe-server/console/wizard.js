// The new-task wizard: pick clauses, verify with the exact preview, confirm.

import { api, fieldError, go, h, nextId, setMain, showError, state } from './core.js';
import { num, utc } from './format.js';
import { counts, projectName, propertyValues, summary } from './tasks.js';

const MAX_CLAUSES = 5;

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

const OPS = ['is', 'is not', 'contains', 'does not contain', 'is set', 'is not set'];
const takesValues = (op) => op !== 'is set' && op !== 'is not set';

/** The clause's optional value predicate: only events whose property holds given values. */
function whereEditor(wizard, clause, index) {
  const at = `clauses[${index}].where`;
  const ids = { on: nextId('where'), type: nextId('where-type'), name: nextId('where-name'), op: nextId('where-op'), values: nextId('where-values') };
  const on = h('input', { type: 'checkbox', id: ids.on, checked: !!clause.where });
  const box = h('div', { class: 'where' });
  const draw = () => {
    const w = clause.where;
    if (!w) return box.replaceChildren();
    const catalog = wizard.catalog;
    const names = {
      event: catalog.event_properties.map((e) => e.name), user: catalog.user_properties.map((e) => e.name),
      built_in: catalog.built_in_fields || [],
    }[w.type];
    if (!names.includes(w.name)) w.name = names[0] || '';
    const select = (id, field, options, value, onchange) => {
      const el = h('select', { id, 'data-field': field, 'data-error-id': `${id}-error` },
        options.map(([v, text]) => h('option', { value: v, selected: v === value }, text)));
      el.addEventListener('change', () => onchange(el.value));
      return el;
    };
    const type = select(ids.type, `${at}.property.type`, [['event', 'Event property'], ['user', 'User property'], ['built_in', 'Built-in field']], w.type,
      (v) => { w.type = v; draw(); });
    const name = select(ids.name, `${at}.property.name`, names.map((n) => [n, n]), w.name, (v) => { w.name = v; });
    const op = select(ids.op, `${at}.op`, OPS.map((o) => [o, o]), w.op, (v) => { w.op = v; draw(); });
    const parts = [h('div', { class: 'row' },
      h('div', {}, h('label', { for: ids.type }, 'Property kind'), type, fieldError(ids.type)),
      h('div', {}, h('label', { for: ids.name }, 'Property'), name, fieldError(ids.name)),
      h('div', {}, h('label', { for: ids.op }, 'Operator'), op, fieldError(ids.op)))];
    if (takesValues(w.op)) {
      const values = h('textarea', { id: ids.values, rows: 3, 'data-field': `${at}.values`, 'data-error-id': `${ids.values}-error` });
      values.value = w.values;
      values.addEventListener('input', () => { w.values = values.value; });
      parts.push(h('label', { for: ids.values }, 'Values, one per line (any of them)'), values, fieldError(ids.values));
    }
    parts.push(h('p', { class: 'hint' }, '“is” compares exactly; “contains” ignores case; “is not” and “does not contain” also match events without the property. The values are kept only until the task completes.'));
    box.replaceChildren(...parts);
  };
  on.addEventListener('change', () => {
    clause.where = on.checked ? { type: 'event', name: '', op: 'is', values: '' } : null;
    if (on.checked) clause.fromProfiles = false;
    wizard.drawClauses();
  });
  draw();
  return h('div', { class: 'check', 'data-field': at, 'data-error-id': `${ids.on}-error` },
    h('label', { for: ids.on }, on, 'Only where a property has a value'), box, fieldError(ids.on));
}

/** A clause's `where` as the API takes it. */
function whereBody(w) {
  if (!w) return undefined;
  const body = { property: { type: w.type, name: w.name }, op: w.op };
  if (takesValues(w.op)) body.values = w.values.split('\n').map((v) => v.replace(/\r$/, '')).filter((v) => v !== '');
  return body;
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
    parts.push(whereEditor(wizard, clause, index));
    if ((clause.kind === 'user_property' || clause.kind === 'group_property') && !clause.where) {
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
      const where = whereBody(c.where);
      if (c.kind === 'event') return { kind: 'event', event_types: names, where };
      if (c.kind === 'event_property') return { kind: 'event_property', properties: names, event_types: types, where };
      return { kind: c.kind, properties: names, event_types: types, from_profiles: c.fromProfiles, where };
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

export async function newTaskPage() {
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
    w.clauses.push({ kind: 'event', names: new Set(), types: new Set(), scope: 'all', fromProfiles: false, where: null });
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
  // Blocking takes whole names: a task that deletes by value cannot block.
  const byValue = body.clauses.some((c) => c.where);
  const keep = h('input', { id: 'keep-blocking', type: 'checkbox', disabled: byValue });
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
      input, fieldError('confirm-name'),
      h('div', { class: 'row' }, keep,
        h('label', { for: 'keep-blocking' }, byValue
          ? 'Keep blocking it: not for a task that deletes by value (blocking takes whole event types and keys)'
          : 'Keep blocking it: new events of these types, and these property keys, are dropped at ingestion from now on (Projects page lists and lifts blocks)'))),
    err,
    h('div', { class: 'actions' },
      h('button', { type: 'button', onclick: () => setMain('Verify deletion task', h('h1', {}, 'New Deletion Task'), verifySection) }, 'Back'),
      del));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (input.value !== body.name) return;
    del.disabled = true;
    const r = await api('POST', `/api/v1/projects/${w.project}/deletion-tasks`, { ...body, confirm: 'DELETE', keep_blocking: keep.checked });
    if (r.status !== 202) { del.disabled = false; return showError(form, r.data, err); }
    go('/');
  });
  setMain('Confirm deletion task', h('h1', {}, 'New Deletion Task'), form);
  input.focus();
}
