// The data page: event volume by upload day and the project's catalog.

import { api, h, nextId, setMain, state } from './core.js';
import { num, ymd } from './format.js';

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

export async function dataPage() {
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
