// Users of the organization and their roles.

import { api, fieldError, h, nextId, setMain, showError } from './core.js';
import { utc } from './format.js';

export async function usersPage() {
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
      usersPage();
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
    usersPage();
  });
  setMain('Users', h('h1', {}, 'Users'), err,
    h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Users' },
      h('thead', {}, h('tr', {}, ['Email', 'Role', 'Status', 'Created', 'Access'].map((c, i) => h('th', { scope: 'col', class: i === 3 ? 'hide-narrow' : false }, c)))),
      h('tbody', {}, rows))),
    form);
}
