// lethe console: a single-page app over the management API. Every change goes through the
// same endpoints a script uses; the session lives in an HttpOnly cookie and state-changing
// requests carry the CSRF token. Page text is built with DOM nodes, never HTML strings.
// This module owns the routes, the header and sign-in; each page is a module of its own.

import { api, fieldError, go, h, onNavigate, setMain, showError, state } from './core.js';
import { dataPage } from './data.js';
import { projectsPage } from './projects.js';
import { auditPage, deletionSettingsPage, homePage } from './tasks.js';
import { usersPage } from './users.js';
import { webhooksPage } from './webhooks.js';
import { newTaskPage } from './wizard.js';

const routes = {
  '/signin': signInPage,
  '/': homePage,
  '/settings/deletion': deletionSettingsPage,
  '/settings/deletion/new': newTaskPage,
  '/settings/audit': auditPage,
  '/settings/webhooks': webhooksPage,
  '/projects': projectsPage,
  '/data': dataPage,
  '/users': usersPage,
};

document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-nav]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey) return;
  e.preventDefault();
  go(a.getAttribute('href'));
});
window.addEventListener('popstate', render);
onNavigate(render);

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

function signInPage() {
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

render();
