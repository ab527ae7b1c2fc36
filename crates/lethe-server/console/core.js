// The console's core: the shared session state, DOM building, API calls (with the CSRF
// token), navigation, and error display next to the field an answer names.

export const state = { user: null, csrf: null, projects: [], timer: null };

/** Builds an element: h('p', {class: 'x'}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
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

let uid = 0;
export const nextId = (p) => `${p}-${++uid}`;

/** Calls the API; answers {status, data}. A lost session goes back to sign-in. */
export async function api(method, path, body) {
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

export function setMain(title, ...children) {
  document.title = `${title} · lethe`;
  const main = document.getElementById('main');
  main.className = '';
  main.replaceChildren(...children);
  return main;
}

export function fieldError(id) {
  return h('p', { class: 'error', id: `${id}-error`, role: 'alert' });
}

/** Shows an API error next to the field it names (or in `fallback`). */
export function showError(form, data, fallback) {
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

/** Renders the page of the current URL (set by app.js, which owns the routes). */
let renderer = async () => {};

/** Sets what renders the current page. */
export function onNavigate(fn) {
  renderer = fn;
}

/** Renders the current page again (after a change). */
export function rerender() {
  return renderer();
}

/** Navigates to `path` inside the console. */
export function go(path) {
  history.pushState({}, '', path);
  return renderer();
}
