// The ork dashboard: a list of runs and a live view of one run (graph, tasks, logs).
// Plain JavaScript on purpose: the Rust binary embeds this file as it is, so there is no build
// step and nothing from outside. The server's JSON API is the only data source.
'use strict';

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

const TASK_PHASES = ['Pending', 'Running', 'Succeeded', 'Failed', 'Skipped', 'Cancelled'];
const FINAL_TASK_PHASES = new Set(['Succeeded', 'Failed', 'Skipped', 'Cancelled']);
const ACTIONS = ['cancel', 'suspend', 'resume', 'rerun'];
const RUNS_REFRESH_MS = 2000;
const NOTICE_MS = 4000;
// A log that is not there yet (no Pod, container not started) is asked for again after 1 s,
// 2 s, 4 s … at most 10 s apart, while its attempt runs.
const LOG_RETRY_FIRST_MS = 1000;
const LOG_RETRY_MAX_MS = 10000;
// Statuses that asking again will not change by itself: a bad request (400), RBAC's no (403),
// nothing there (404). Polling on after one only repeats the error (and, for a 403, adds one
// more refused request to the cluster's audit log), so the page stops and says so.
const SETTLED_STATUSES = new Set([400, 403, 404]);
// What a log request answers while the attempt's Pod (404) or container (400) is not up yet:
// these change by themselves, so they are worth trying again. A 403 is not.
const LOG_WAITING_STATUSES = new Set([400, 404]);
const SVG_NS = 'http://www.w3.org/2000/svg';

// Graph viewport limits. A small graph is not blown up past MAX_FIT_SCALE when fitted: a
// four-task diamond drawn at 5x looks broken, not helpful. See fitGraph() for the other end.
const GRAPH_PAD = 24;
const MAX_FIT_SCALE = 1.3;
const MIN_READABLE_SCALE = 0.6; // labels are 12.5px: about 7.5px on screen
const MIN_SCALE = 0.05;
const MAX_SCALE = 4;

// ---------------------------------------------------------------------------------------------
// State. One object per concern, so what a function touches is easy to see.
// ---------------------------------------------------------------------------------------------

/** What the server told us about where we are (GET /api/context). */
const context = { mode: 'cluster', namespace: 'default', namespaces: null };

/** The runs list: its filters survive going to a run and back. */
const list = {
  namespace: null,   // set from the context at start
  workflow: '',
  phase: '',
  runs: [],
  loaded: false,     // an answer came for this namespace
  failed: false,     // the last refresh failed (the banner says why)
  stopped: false,    // a settled error (400/403/404) stopped the polling until the user acts
  timer: null,       // the pending refresh, while the list is shown
  shownNamespace: null, // the namespace list.runs belongs to
  generation: 0,     // bumps when the list stops, so late answers are dropped
};

/**
 * The run on screen, or null. Replaced as a whole when another run is opened, so callbacks of
 * an old run can tell (`current !== run`) that they are late and must do nothing.
 */
let current = null;

/** The log stream of the task panel. */
const logs = {
  key: null,          // what is shown (run, task, attempt); while it stays the same, so does the stream
  url: null,          // the request for that key
  controller: null,   // the request in flight, aborted when the key changes
  tries: 0,           // requests made for this key
  timer: null,        // the next try after a 404/400
  delay: LOG_RETRY_FIRST_MS, // the wait before that try; doubles up to LOG_RETRY_MAX_MS
  running: false,     // whether the shown attempt still runs: only then does its log turn up later
};

/** Graph viewport: top-left corner in graph coordinates and pixels per graph unit. */
const viewport = { x: 0, y: 0, scale: 1, fitted: null, moved: false };

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** Creates an element: el('a', {href: '#'}, 'text', child). `null` attributes are left out. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c != null));
  return node;
}

/** Same as el() in the SVG namespace. */
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c != null));
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === 'class') node.setAttribute('class', value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
}

/** Sets text only when it changed: live updates come every second and most change nothing. */
function setText(node, text) {
  const value = text == null ? '' : String(text);
  if (node.textContent !== value) node.textContent = value;
}

const enc = encodeURIComponent;

/** Enter and Space act like a click on things that are not buttons (graph nodes, attempts). */
function onActivateKey(node, action) {
  node.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      action();
    }
  });
}

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}

/** The fan-out task an instance name like `p[3]` belongs to, or null. */
function parentOf(name) {
  const match = /^(.*)\[(\d+)\]$/.exec(name || '');
  return match ? match[1] : null;
}

/**
 * Makes `tbody` hold one row per item, in order, reusing rows by key. Rows are only moved when
 * out of place and only refilled, never rebuilt: the page updates every second or two, and a
 * row replaced between mouse-down and mouse-up would swallow the user's click.
 */
function syncRows(tbody, items, keyOf, create, fill) {
  const old = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  let previous = null;
  for (const item of items) {
    const key = keyOf(item);
    let row = old.get(key);
    if (row) old.delete(key);
    else {
      row = create(item);
      row.dataset.key = key;
    }
    fill(row, item);
    const expected = previous ? previous.nextSibling : tbody.firstChild;
    if (row !== expected) tbody.insertBefore(row, expected);
    previous = row;
  }
  for (const row of old.values()) row.remove();
}

/** Shown so far, per element, by rebuildWhenChanged(). */
const shownData = new WeakMap();

/**
 * Whether `node` must be rebuilt to show `data`: false when it already shows the same. Live
 * updates mostly repeat themselves, and rebuilding would reset hover and eat clicks.
 */
function rebuildWhenChanged(node, data) {
  const key = JSON.stringify(data);
  if (shownData.get(node) === key) return false;
  shownData.set(node, key);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------------------

function parseTime(value) {
  if (!value) return null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

/** "0.4s", "12.3s", "3m4s", "2h5m", "1d3h". */
function formatDuration(ms) {
  if (ms == null || ms < 0) ms = 0;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const s = Math.floor(seconds);
  const [d, h, m] = [Math.floor(s / 86400), Math.floor(s / 3600) % 24, Math.floor(s / 60) % 60];
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${m}m`;
  return `${m}m${s % 60}s`;
}

/** "5s", "3m", "2h", "4d": how long ago, in the largest whole unit. */
function formatAge(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function formatClock(value) {
  const ms = parseTime(value);
  if (ms == null) return '';
  const date = new Date(ms);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
}

/**
 * Shows the time from `start` to `end` in `node`; without an end it counts up (the once-a-second
 * tick() keeps every such node current, so the live updates need not).
 */
function showDuration(node, start, end, fallback = '') {
  const from = parseTime(start);
  if (from == null) {
    delete node.dataset.start;
    delete node.dataset.end;
    setText(node, fallback);
    return;
  }
  node.dataset.start = start;
  if (end) node.dataset.end = end;
  else delete node.dataset.end;
  setText(node, formatDuration((parseTime(end) ?? Date.now()) - from));
}

/** Shows the age of `created` in `node`, kept current by tick(). */
function showAge(node, created) {
  const from = parseTime(created);
  if (from == null) {
    delete node.dataset.created;
    setText(node, '');
    return;
  }
  node.dataset.created = created;
  node.title = formatClock(created);
  setText(node, formatAge(Date.now() - from));
}

/** Once a second: running durations and ages move on. */
function tick() {
  const now = Date.now();
  for (const node of document.querySelectorAll('[data-start]:not([data-end])')) {
    setText(node, formatDuration(now - parseTime(node.dataset.start)));
  }
  for (const node of document.querySelectorAll('[data-created]')) {
    setText(node, formatAge(now - parseTime(node.dataset.created)));
  }
}

// ---------------------------------------------------------------------------------------------
// Talking to the server
// ---------------------------------------------------------------------------------------------

/** The message of a failed response: the API's `{"error"}`, else the status line. */
async function errorMessage(response) {
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === 'string') return body.error;
  } catch (_) {
    // Not JSON: a proxy's page or similar. Fall through to the status.
  }
  const detail = text && text.length < 200 ? `: ${text.trim()}` : '';
  return `${response.status} ${response.statusText || 'error'}${detail}`;
}

/**
 * GET or POST JSON; throws an Error whose message is fit to show the user and whose `status` is
 * the HTTP status (none when the server could not be reached), so callers can tell an answer
 * that will not change (isSettled) from a passing failure.
 */
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: 'application/json' }, ...options });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new Error(`Cannot reach the ork server (${err.message}).`);
  }
  if (!response.ok) {
    const error = new Error(await errorMessage(response));
    error.status = response.status;
    throw error;
  }
  return response.json();
}

/** Whether a failed request would fail the same way if made again (see SETTLED_STATUSES). */
function isSettled(err) {
  return !!err && SETTLED_STATUSES.has(err.status);
}

function runPath(namespace, name) {
  return `/api/runs/${enc(namespace)}/${enc(name)}`;
}

// ---------------------------------------------------------------------------------------------
// Error banner and notices
// ---------------------------------------------------------------------------------------------

// The banner remembers which part of the page raised it, so that part can take it back when it
// works again (the runs list recovering, say) without hiding someone else's error.
let errorSource = null;

// The error the user last dismissed: a poll that keeps failing the same way must not bring it
// back every two seconds. Forgotten when that part of the page works again or starts over.
let dismissedError = null;

/** Shows `message` in the banner; with `retry`, a Retry button next to it calls that. */
function showError(message, source = 'page', retry = null) {
  const banner = $('error');
  const dismiss = () => {
    dismissedError = { source, message };
    clearError();
  };
  // The close button is drawn by CSS and Retry is an <input> (see retryButton), so the banner's
  // text is exactly the message.
  const parts = [
    document.createTextNode(message),
    retry ? retryButton(retry) : null,
    el('button', { type: 'button', class: 'banner-close', 'aria-label': 'Dismiss', onclick: dismiss }),
  ];
  banner.replaceChildren(...parts.filter((part) => part != null)); // a null would show as "null"

  banner.hidden = false;
  errorSource = source;
}

/** Whether the user dismissed this very error of this source (and it was not forgotten since). */
function wasDismissed(source, message) {
  return !!dismissedError && dismissedError.source === source && dismissedError.message === message;
}

function forgetDismissed(source) {
  if (dismissedError && dismissedError.source === source) dismissedError = null;
}

/**
 * A "Retry" button. An <input type=button>, not a <button>: its label is its value, not text,
 * so the text of what holds it (the banner, the list's empty line) stays exactly the message.
 */
function retryButton(onRetry) {
  const button = el('input', { type: 'button', value: 'Retry', class: 'btn retry', onclick: onRetry });
  // style.css has no rule for it, and the page is three fixed files: size it here.
  Object.assign(button.style, { marginLeft: '12px', height: '26px', padding: '0 10px', verticalAlign: 'middle' });
  return button;
}

/** Hides the banner; with a source, only if that source raised it. */
function clearError(source) {
  if (source && source !== errorSource) return;
  $('error').hidden = true;
  $('error').replaceChildren();
  errorSource = null;
}

let noticeTimer = null;

function showNotice(message) {
  const notice = $('notice');
  notice.textContent = message;
  notice.hidden = false;
  notice.classList.remove('fade');
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    notice.classList.add('fade');
    noticeTimer = setTimeout(() => { notice.hidden = true; }, 400);
  }, NOTICE_MS);
}

// ---------------------------------------------------------------------------------------------
// Routing: #/ is the list, #/runs/NS/NAME a run, #/runs/NS/NAME/TASK a run with a task selected.
// ---------------------------------------------------------------------------------------------

function decodeSegment(segment) {
  try {
    return decodeURIComponent(segment);
  } catch (_) {
    return segment; // a stray % typed by hand
  }
}

function parseHash() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeSegment);
  if (parts[0] === 'runs' && parts[1] && parts[2]) {
    // Task names have no slash, but join the rest anyway rather than drop part of a name.
    const task = parts.slice(3).join('/') || null;
    return { view: 'run', namespace: parts[1], name: parts[2], task };
  }
  return { view: 'list' };
}

function runHash(namespace, name, task) {
  return `#/runs/${enc(namespace)}/${enc(name)}${task ? `/${enc(task)}` : ''}`;
}

function navigate(hash) {
  if (location.hash !== hash) location.hash = hash;
}

/** Shows what the address says. Opening the same run again only changes the selected task. */
function route() {
  const where = parseHash();
  if (where.view === 'run') {
    stopRunsList();
    if (current && current.namespace === where.namespace && current.name === where.name) {
      selectTask(where.task);
    } else {
      clearError();
      openRun(where.namespace, where.name, where.task);
    }
  } else {
    if (current) clearError();
    closeRun();
    showRunsList();
  }
  renderCrumbs(where);
}

function renderCrumbs(where) {
  const crumbs = [el('a', { href: '#/' }, 'Runs')];
  if (where.view === 'run') {
    crumbs.push(el('span', { class: 'sep' }, '/'), el('span', { class: 'muted' }, where.namespace));
    crumbs.push(el('span', { class: 'sep' }, '/'), el('a', { href: runHash(where.namespace, where.name) }, where.name));
    if (where.task) crumbs.push(el('span', { class: 'sep' }, '/'), el('span', {}, where.task));
  }
  $('crumbs').replaceChildren(...crumbs);
}

function showView(id) {
  for (const view of document.querySelectorAll('.view')) view.hidden = view.id !== id;
}

// ---------------------------------------------------------------------------------------------
// Runs list
// ---------------------------------------------------------------------------------------------

/** The namespace filter: a select when the user may list namespaces, else a text field. */
function setupNamespaceFilter() {
  let field;
  if (Array.isArray(context.namespaces)) {
    const names = [...context.namespaces];
    if (!names.includes(list.namespace)) names.unshift(list.namespace);
    field = el('select', { id: 'filter-namespace' }, ...names.map((ns) => el('option', { value: ns }, ns)));
    field.value = list.namespace;
  } else {
    field = el('input', { id: 'filter-namespace', type: 'text', spellcheck: 'false', autocomplete: 'off' });
    field.value = list.namespace;
  }
  // `change`, not `input`: a half-typed namespace would only fetch errors.
  field.addEventListener('change', () => {
    const value = field.value.trim();
    // The same namespace again only matters when a settled error stopped the polling.
    if (!value || (value === list.namespace && !list.stopped)) return;
    list.namespace = value;
    // Another namespace is a fresh start: the old one's error no longer applies, and polling
    // resumes even if a settled error had stopped it.
    clearError('runs');
    restartRunsList();
  });
  $('namespace-slot').replaceChildren(field);
}

function setupListFilters() {
  const workflow = $('filter-workflow');
  const phase = $('filter-phase');
  workflow.addEventListener('input', () => { list.workflow = workflow.value; renderRuns(); });
  phase.addEventListener('change', () => { list.phase = phase.value; renderRuns(); });
}

function showRunsList() {
  showView('runs-view');
  document.title = 'Runs · ork';
  setLive(null);
  renderRuns();
  restartRunsList();
}

/**
 * Polls the list every RUNS_REFRESH_MS while it is shown, until a settled error (400, 403, 404)
 * stops it: then the error stays with a Retry button, and a new namespace or Retry starts over.
 */
function restartRunsList() {
  stopRunsList();
  const namespaceChanged = list.shownNamespace !== list.namespace;
  list.shownNamespace = list.namespace;
  if (namespaceChanged || list.stopped) {
    // Rows of another namespace, or of an answer that said no, must not stand for this one.
    list.runs = [];
    list.loaded = false;
    list.failed = false;
  }
  list.stopped = false;
  forgetDismissed('runs'); // the user acted: a new failure is news again
  renderRuns();
  const generation = list.generation;
  const refresh = async () => {
    try {
      const body = await api(`/api/runs?namespace=${enc(list.namespace)}`);
      if (generation !== list.generation) return;
      list.runs = Array.isArray(body.runs) ? body.runs : [];
      list.loaded = true;
      list.failed = false;
      forgetDismissed('runs');
      clearError('runs');
      renderRuns();
    } catch (err) {
      if (generation !== list.generation) return;
      list.loaded = true;
      list.failed = true;
      if (isSettled(err)) {
        // The same request would get the same answer: stop here rather than ask every two
        // seconds, and drop the rows, which this answer says are not ours to show.
        list.stopped = true;
        list.runs = [];
        renderRuns();
        showError(err.message, 'runs', retryRunsList);
        return;
      }
      // A passing failure (the server restarting, the network): keep polling. The old rows stay
      // until an answer replaces them, and a banner the user closed stays closed while the same
      // error repeats.
      renderRuns();
      if (!wasDismissed('runs', err.message)) showError(err.message, 'runs');
    }
    list.timer = setTimeout(refresh, RUNS_REFRESH_MS);
  };
  refresh();
}

/** The Retry button of a runs list stopped by a settled error. */
function retryRunsList() {
  clearError('runs');
  restartRunsList();
}

function stopRunsList() {
  list.generation += 1;
  clearTimeout(list.timer);
  list.timer = null;
}

/** A run that has not started has no phase yet; for showing and filtering it is Pending. */
function runPhase(run) {
  return run.phase || 'Pending';
}

function matchesFilters(run) {
  const workflow = list.workflow.trim().toLowerCase();
  if (workflow && !(run.workflow || '').toLowerCase().includes(workflow)) return false;
  if (list.phase && runPhase(run) !== list.phase) return false;
  return true;
}

/** The table in the server's order (newest first), rows kept across the 2-second refresh. */
function renderRuns() {
  const shown = list.runs.filter(matchesFilters);
  syncRows($('runs').tBodies[0], shown, (run) => `${run.namespace}/${run.name}`, createRunRow, fillRunRow);

  const empty = $('runs-empty');
  empty.hidden = shown.length > 0;
  if (!list.loaded) empty.textContent = 'Loading…';
  else if (list.runs.length) empty.textContent = 'No run matches these filters.';
  else if (list.failed) {
    // When polling stopped, Retry is here too: the banner with its own may have been closed.
    empty.textContent = 'The runs could not be listed.';
    if (list.stopped) empty.append(retryButton(retryRunsList));
  } else empty.textContent = `No runs in namespace ${list.namespace}.`;
  setText($('runs-count'), list.runs.length ? `${shown.length} of ${list.runs.length}` : '');
}

function createRunRow(run) {
  const href = runHash(run.namespace, run.name);
  const row = el('tr', { 'data-run': run.name, 'data-namespace': run.namespace },
    el('td', { class: 'name' }, el('a', { href }, run.name)),
    el('td', { class: 'workflow' }),
    el('td', { class: 'phase' }),
    el('td', { class: 'progress' }),
    el('td', { class: 'age num' }),
  );
  // The whole row is a target; the link inside keeps middle-click and copy-link working.
  row.addEventListener('click', (event) => {
    if (!event.target.closest('a')) navigate(href);
  });
  return row;
}

function fillRunRow(row, run) {
  setText(row.querySelector('.workflow'), run.workflow);
  const phase = row.querySelector('.phase');
  setText(phase, runPhase(run));
  phase.dataset.phase = runPhase(run);
  // "suspended" is drawn by CSS so the cell's text stays exactly the phase.
  phase.toggleAttribute('data-suspended', !!run.suspended);
  phase.title = run.phase ? '' : 'Not started yet';
  setText(row.querySelector('.progress'), run.progress || '');
  showAge(row.querySelector('.age'), run.createdAt);
}

// ---------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------

/** Opens a run: GET it once for the graph, then follow its live updates. */
async function openRun(namespace, name, task) {
  closeRun();
  const run = {
    namespace, name,
    view: null,            // the latest RunView (its graph kept from the first GET)
    statuses: new Map(),   // task name -> TaskStatus
    nodes: new Map(),      // task name -> drawn graph node
    selected: task,        // task name, or null
    attempt: null,         // the attempt whose logs are shown; null follows the latest
    source: null,          // the EventSource
    retry: null,           // timer to reopen a watch the server closed
    busy: new Set(),       // actions whose request is in flight
    gone: false,
  };
  current = run;
  forgetDismissed('watch'); // a closed banner of another run's watch says nothing about this one
  showView('run-view');
  resetRunView(run);

  try {
    const view = await api(runPath(namespace, name));
    if (current !== run) return;
    drawGraph(view.graph);
    applyView(run, view); // opens the task panel if a task is selected: the frame narrows
    if (view.graph) sizeGraphFrame(view.graph);
    fitGraph('width');
    watchRun(run);
  } catch (err) {
    if (current !== run) return;
    showError(err.message);
    showUnavailable(true);
  }
}

/** Stops everything the shown run had going: the watch, the log stream, retries. */
function closeRun() {
  if (!current) return;
  if (current.source) current.source.close();
  clearTimeout(current.retry);
  stopLogs();
  current = null;
}

/** Clears what the previous run left on screen before the new one loads. */
function resetRunView(run) {
  document.title = `${run.name} · ork`;
  setText($('run-name'), run.name);
  setText($('run-namespace'), run.namespace);
  for (const id of ['run-phase', 'run-progress', 'run-workflow', 'run-created', 'run-duration', 'run-message']) {
    setText($(id), '');
  }
  $('run-phase').removeAttribute('data-phase');
  $('run-progress-bar').style.width = '0';
  $('run-suspended').hidden = true;
  showUnavailable(false);
  $('graph').replaceChildren();
  $('tasks').tBodies[0].replaceChildren();
  $('tasks-empty').hidden = true;
  $('task').hidden = true;
  document.body.classList.remove('with-task');
  renderActions(run);
  setLive(null);
}

/** Instead of an empty graph and table: a line saying the run could not be loaded. */
function showUnavailable(unavailable) {
  $('run-unavailable').hidden = !unavailable;
  $('run-meta').hidden = unavailable;
  $('run-body').hidden = unavailable;
}

/** Takes a RunView (from the GET or the watch) and updates everything shown from it. */
function applyView(run, view) {
  const graph = run.view ? run.view.graph : view.graph;
  run.view = { ...view, graph };
  run.statuses = new Map((view.tasks || []).map((task) => [task.name, task]));
  renderRunHeader(run);
  renderActions(run);
  updateGraph(run);
  renderTasks(run);
  renderTaskPanel(run);
}

function renderRunHeader(run) {
  const info = run.view.run || {};
  const phase = info.phase || 'Pending';
  setText($('run-name'), info.name || run.name);
  setText($('run-phase'), phase);
  $('run-phase').dataset.phase = phase;
  $('run-suspended').hidden = !info.suspended;
  setText($('run-workflow'), info.workflow || '');
  setText($('run-namespace'), info.namespace || run.namespace);
  setText($('run-progress'), info.progress || '');
  $('run-progress-bar').style.width = `${progressPercent(info.progress)}%`;
  const created = $('run-created');
  setText(created, formatClock(info.createdAt));
  created.title = info.createdAt || '';
  // Our own clock ticks; the server's `duration` is the fallback when there is no start time.
  const serverDuration = typeof info.duration === 'string' ? info.duration : '';
  showDuration($('run-duration'), info.startedAt, info.finishedAt, serverDuration);
  setText($('run-message'), info.message || '');
  $('run-message').dataset.phase = phase; // a failed run's message is tinted red
}

/** "3/5" -> 60. */
function progressPercent(progress) {
  const match = /^(\d+)\s*\/\s*(\d+)$/.exec(progress || '');
  if (!match || Number(match[2]) === 0) return 0;
  return clamp((100 * Number(match[1])) / Number(match[2]), 0, 100);
}

/** A button may be used when the server allows the action and no request for it is running. */
function renderActions(run) {
  const allowed = (run && run.view && run.view.actions) || {};
  for (const action of ACTIONS) {
    const button = $(action);
    button.disabled = !run || run.gone || !allowed[action] || run.busy.has(action);
    button.classList.toggle('busy', !!run && run.busy.has(action));
  }
}

async function runAction(action) {
  const run = current;
  if (!run || run.busy.has(action)) return;
  run.busy.add(action);
  renderActions(run);
  try {
    const body = await api(`${runPath(run.namespace, run.name)}/actions/${action}`, { method: 'POST' });
    showNotice(body.message || `${action} requested.`);
    if (body.run) {
      // A rerun is a new run: go and watch it.
      navigate(runHash(run.namespace, body.run));
    } else if (current === run) {
      refreshRun(run); // show the effect now rather than at the next live update
    }
  } catch (err) {
    showError(err.message);
  } finally {
    run.busy.delete(action);
    if (current === run) renderActions(run);
  }
}

/**
 * One GET of the run, for after an action or when the watch broke. Returns null when it worked,
 * else the error (already in the banner), whose status tells whether trying again makes sense.
 */
async function refreshRun(run, source = 'page') {
  try {
    const view = await api(runPath(run.namespace, run.name));
    if (current === run && !run.gone) {
      clearError(source);
      applyView(run, view);
    }
    return null;
  } catch (err) {
    // While the watch is down this repeats every few seconds: a banner the user closed on the
    // same error stays closed.
    const dismissed = source === 'watch' && wasDismissed(source, err.message);
    if (current === run && !dismissed) showError(err.message, source);
    return err;
  }
}

// ---------------------------------------------------------------------------------------------
// Live updates (Server-Sent Events)
// ---------------------------------------------------------------------------------------------

/**
 * Follows the run's changes. Only the event names below mean something; any other the server
 * may send (`broken` with `{}` when it could not encode a view) has no listener and so is
 * ignored, which EventSource does for unknown names.
 */
function watchRun(run) {
  const source = new EventSource(`${runPath(run.namespace, run.name)}/watch`);
  run.source = source;
  const onView = (event) => {
    if (current !== run || run.gone) return;
    let view;
    try {
      view = JSON.parse(event.data);
    } catch (_) {
      return; // a partial or foreign message: the next one will do
    }
    // Something that is not a RunView (`{}`, say) would blank the page: skip it.
    if (!view || typeof view.run !== 'object' || !Array.isArray(view.tasks)) return;
    forgetDismissed('watch');
    clearError('watch');
    setLive('live'); // also after an `error` event the server named so, which EventSource reports as a failure
    applyView(run, view);
  };
  source.addEventListener('run', onView);
  source.addEventListener('message', onView); // an event without a name, should one come
  // Whichever source it comes from (even one of a run no longer shown), `gone` is final.
  source.addEventListener('gone', () => runGone(run, source));
  source.addEventListener('open', () => { if (current === run && !run.gone) setLive('live'); });
  source.addEventListener('error', () => onWatchError(run, source));
  setLive('connecting');
}

/**
 * EventSource retries by itself after a dropped connection; only when it gives up (the server
 * answered with an error) do we step in: a GET of the run says why, then we reconnect, unless
 * the answer will not change (403: no longer allowed, 404: no such run), where we stop for good.
 */
function onWatchError(run, source) {
  if (current !== run || run.gone || run.source !== source) return;
  if (source.readyState !== EventSource.CLOSED) {
    setLive('connecting');
    return;
  }
  setLive('off');
  // The event carries no reason; a GET of the run does, and shows it in the banner.
  run.retry = setTimeout(async () => {
    if (current !== run || run.gone) return;
    const err = await refreshRun(run, 'watch');
    if (current !== run || run.gone) return;
    if (!err) watchRun(run);
    else if (isSettled(err)) endWatch(run, source, err.message, err.status === 404);
    else run.retry = setTimeout(() => onWatchError(run, source), 5000);
  }, 3000);
}

/** The server said the run was deleted. */
function runGone(run, source) {
  // Close even a source of a run no longer shown: EventSource would otherwise reconnect.
  source.close();
  if (current !== run || run.gone) return;
  endWatch(run, source, `Run ${run.namespace}/${run.name} was deleted.`, true);
}

/**
 * Stops following the run for good, with `message` in the banner: no reconnect, no retry.
 * A gone run also loses its buttons and its log stream (what was read stays on screen).
 */
function endWatch(run, source, message, gone) {
  source.close();
  if (run.source) run.source.close();
  clearTimeout(run.retry);
  run.retry = null;
  setLive('off');
  if (gone) {
    run.gone = true;
    stopLogs();
    renderActions(run);
  }
  showError(message, gone ? 'gone' : 'watch');
}

/** The dot in the top bar: whether this page is getting live updates. */
function setLive(state) {
  const live = $('live');
  live.hidden = !state;
  if (!state) return;
  live.dataset.state = state;
  live.textContent = { live: 'Live', connecting: 'Connecting…', off: 'Not live' }[state];
}

// ---------------------------------------------------------------------------------------------
// The graph: drawn once from the GET, recoloured on every update
// ---------------------------------------------------------------------------------------------

function drawGraph(graph) {
  const canvas = $('graph');
  current.nodes = new Map();
  if (!graph || !Array.isArray(graph.nodes)) {
    canvas.replaceChildren();
    return;
  }
  const edges = svg('g', { class: 'edges' });
  for (const edge of graph.edges || []) {
    edges.append(svg('path', {
      class: 'edge', d: edge.d, 'data-from': edge.from, 'data-to': edge.to, 'marker-end': 'url(#arrow)',
    }));
  }
  const nodes = svg('g', { class: 'nodes' });
  for (const node of graph.nodes) {
    const drawn = drawNode(node);
    current.nodes.set(node.task, drawn);
    nodes.append(drawn.group);
  }
  canvas.replaceChildren(graphDefs(), edges, nodes);
}

/** Arrow heads: one plain, one for the edges of the selected task. */
function graphDefs() {
  const arrow = (id) => svg('marker', {
    id, viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7',
    markerUnits: 'userSpaceOnUse', orient: 'auto',
  }, svg('path', { d: 'M 0 0 L 10 5 L 0 10 z' }));
  return svg('defs', {}, arrow('arrow'), arrow('arrow-active'));
}

/**
 * One task: a rounded box coloured by phase (CSS, from data-phase), its label, and two badges
 * shown when they mean something: attempts (top right) and a fan-out's done/instances (bottom).
 */
function drawNode(node) {
  const { width: w, height: h } = node;
  const group = svg('g', {
    class: `node${node.finally ? ' finally' : ''}${node.forEach ? ' fan-out' : ''}`,
    'data-task': node.task, 'data-phase': 'Pending',
    transform: `translate(${node.x} ${node.y})`,
    tabindex: '0', role: 'button',
  });
  const title = svg('title', {}, node.task);
  group.append(title);
  if (node.forEach) {
    // Two cards peeking out behind: "this box stands for many".
    group.append(svg('rect', { class: 'stack', x: 6, y: 6, width: w, height: h, rx: 6 }));
    group.append(svg('rect', { class: 'stack', x: 3, y: 3, width: w, height: h, rx: 6 }));
  }
  group.append(svg('rect', { class: 'box', width: w, height: h, rx: 6 }));
  group.append(svg('text', { class: 'label', x: w / 2, y: h / 2 }, fitLabel(node.label || node.task, w)));

  const attempts = badge(w, -7, 'attempts');
  const instances = node.forEach ? badge(w / 2, h + 1, 'instances') : null;
  group.append(attempts.group);
  if (instances) group.append(instances.group);
  onActivateKey(group, () => navigateToTask(node.task));
  return { group, title, attempts, instances, node };
}

/** Labels are sized by the server; cut one that still would not fit rather than overflow. */
function fitLabel(text, width) {
  const room = Math.max(3, Math.floor((width - 12) / 7.2));
  return text.length > room ? `${text.slice(0, room - 1)}…` : text;
}

/** A small pill centred on (x, y); hidden until it has something to say. */
function badge(x, y, kind) {
  const rect = svg('rect', { height: 15, rx: 7.5, y: -7.5 });
  const text = svg('text', { y: 0.5 });
  const group = svg('g', {
    class: `badge ${kind}`, transform: `translate(${x} ${y})`, visibility: 'hidden',
  }, rect, text);
  return { group, rect, text };
}

function setBadge(badge, text) {
  badge.group.setAttribute('visibility', text ? 'visible' : 'hidden');
  if (!text || badge.text.textContent === text) return;
  badge.text.textContent = text;
  const width = text.length * 6.2 + 10;
  badge.rect.setAttribute('width', width);
  badge.rect.setAttribute('x', -width / 2);
}

/** Colours, badges and selection from the latest statuses. */
function updateGraph(run) {
  const selectedNode = graphNodeOf(run, run.selected);
  for (const [task, drawn] of run.nodes) {
    const status = run.statuses.get(task);
    const phase = (status && status.phase) || 'Pending';
    const group = drawn.group;
    if (group.dataset.phase !== phase) group.dataset.phase = phase;
    group.classList.toggle('selected', task === selectedNode);

    const attempts = (status && status.attempts) || 0;
    setBadge(drawn.attempts, attempts > 1 ? `×${attempts}` : '');
    const fanOut = drawn.instances ? instanceProgress(run, task, status) : null;
    if (drawn.instances) setBadge(drawn.instances, fanOut ? `${fanOut.done}/${fanOut.total}` : '');

    let tip = `${task}: ${phase}`;
    if (attempts > 1) tip += `, ${attempts} attempts`;
    if (fanOut) tip += `, ${fanOut.done}/${fanOut.total} instances done`;
    setText(drawn.title, tip);
    group.setAttribute('aria-label', tip);
  }
  for (const edge of $('graph').querySelectorAll('.edge')) {
    const active = selectedNode && (edge.dataset.from === selectedNode || edge.dataset.to === selectedNode);
    if (edge.classList.contains('active') === !!active) continue; // most updates change no edge
    edge.classList.toggle('active', !!active);
    edge.setAttribute('marker-end', active ? 'url(#arrow-active)' : 'url(#arrow)');
  }
}

/** The graph node showing a task: its own, or for an instance `p[3]` its fan-out task's `p`. */
function graphNodeOf(run, task) {
  if (!task || run.nodes.has(task)) return task;
  return parentOf(task);
}

/** A fan-out task's instances: how many, and how many are over. Null until the count is known. */
function instanceProgress(run, task, status) {
  if (!status || status.instances == null) return null;
  let done = 0;
  for (let i = 0; i < status.instances; i += 1) {
    const instance = run.statuses.get(`${task}[${i}]`);
    if (instance && FINAL_TASK_PHASES.has(instance.phase)) done += 1;
  }
  return { done, total: status.instances };
}

function isFanOut(run, task) {
  const drawn = run.nodes.get(task);
  const status = run.statuses.get(task);
  return !!((drawn && drawn.node.forEach) || (status && status.instances != null));
}

// ---------------------------------------------------------------------------------------------
// Graph viewport: pan by dragging, zoom with the wheel, fit buttons. All by moving the viewBox,
// whose aspect always matches the element's so one scale holds both ways.
// ---------------------------------------------------------------------------------------------

function graphSize() {
  const rect = $('graph').getBoundingClientRect();
  return { width: rect.width || 1, height: rect.height || 1, left: rect.left, top: rect.top };
}

function applyViewport() {
  const { width, height } = graphSize();
  const s = viewport.scale;
  $('graph').setAttribute('viewBox', `${viewport.x} ${viewport.y} ${width / s} ${height / s}`);
}

/**
 * Makes the frame as tall as the graph needs at fit-to-width, within limits: a diamond does not
 * need half the screen, and a 20-layer graph should not push the task table off it.
 */
function sizeGraphFrame(graph) {
  const frame = $('graph-frame');
  const width = frame.clientWidth || 800;
  const scale = clamp(width / (graph.width + 2 * GRAPH_PAD), MIN_READABLE_SCALE, MAX_FIT_SCALE);
  const wanted = (graph.height + 2 * GRAPH_PAD) * scale;
  const most = Math.max(320, window.innerHeight * 0.62);
  frame.style.height = `${Math.round(clamp(wanted, 180, most))}px`;
}

/**
 * 'all' shows the whole graph. 'width' fills the width, down to MIN_READABLE_SCALE: a graph too
 * wide to read when fitted (20 tasks side by side next to the task panel) shows the part around
 * the selected task, or the middle, at a size one can read; 'Fit' is there for the overview.
 * A graph taller than the frame starts at its top, or around the selected task.
 */
function fitGraph(mode) {
  const graph = current && current.view && current.view.graph;
  if (!graph) return;
  const { width, height } = graphSize();
  let scale = width / (graph.width + 2 * GRAPH_PAD);
  if (mode === 'all') scale = Math.min(scale, height / (graph.height + 2 * GRAPH_PAD));
  else scale = Math.max(scale, MIN_READABLE_SCALE);
  scale = Math.min(scale, MAX_FIT_SCALE);

  const focus = focusPoint();
  viewport.scale = scale;
  viewport.x = placeAxis(graph.width, width / scale, focus ? focus.x : null);
  viewport.y = placeAxis(graph.height, height / scale, focus ? focus.y : null, -GRAPH_PAD);
  viewport.fitted = mode;
  viewport.moved = false; // until the user pans or zooms, resizes keep this fit
  applyViewport();
}

/**
 * Where the view starts along one axis: centred when the graph fits in `visible`, else around
 * `focus` (kept within the graph), else at `start` or the middle.
 */
function placeAxis(size, visible, focus, start = null) {
  if (size + 2 * GRAPH_PAD <= visible) return size / 2 - visible / 2;
  const low = -GRAPH_PAD;
  const high = size + GRAPH_PAD - visible;
  if (focus != null) return clamp(focus - visible / 2, low, high);
  return start != null ? start : clamp(size / 2 - visible / 2, low, high);
}

/** The centre of the selected task's node in graph coordinates, or null. */
function focusPoint() {
  const task = current && graphNodeOf(current, current.selected);
  const drawn = task && current.nodes.get(task);
  if (!drawn) return null;
  const { x, y, width, height } = drawn.node;
  return { x: x + width / 2, y: y + height / 2 };
}

/** Zooms by `factor` keeping the graph point under (clientX, clientY) where it is. */
function zoomAt(clientX, clientY, factor) {
  const { left, top } = graphSize();
  const px = clientX - left;
  const py = clientY - top;
  const gx = viewport.x + px / viewport.scale;
  const gy = viewport.y + py / viewport.scale;
  viewport.scale = clamp(viewport.scale * factor, MIN_SCALE, MAX_SCALE);
  viewport.x = gx - px / viewport.scale;
  viewport.y = gy - py / viewport.scale;
  viewport.moved = true;
  applyViewport();
}

function zoomCentre(factor) {
  const { width, height, left, top } = graphSize();
  zoomAt(left + width / 2, top + height / 2, factor);
}

function setupGraphControls() {
  const canvas = $('graph');
  let drag = null;
  let suppressClick = false;

  canvas.addEventListener('pointerdown', (event) => {
    if (event.button !== 0) return;
    drag = { id: event.pointerId, x: event.clientX, y: event.clientY, vx: viewport.x, vy: viewport.y, moving: false };
  });
  canvas.addEventListener('pointermove', (event) => {
    if (!drag || event.pointerId !== drag.id) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    // A few pixels of jitter is still a click on a node.
    if (!drag.moving && Math.hypot(dx, dy) < 4) return;
    if (!drag.moving) {
      drag.moving = true;
      // Captured only now: capturing on pointerdown would send every click to the svg.
      canvas.setPointerCapture(event.pointerId);
      canvas.classList.add('dragging');
    }
    viewport.x = drag.vx - dx / viewport.scale;
    viewport.y = drag.vy - dy / viewport.scale;
    viewport.moved = true;
    applyViewport();
  });
  const endDrag = () => {
    if (drag && drag.moving) {
      suppressClick = true; // the click that ends a drag selects nothing
      setTimeout(() => { suppressClick = false; }, 0);
    }
    drag = null;
    canvas.classList.remove('dragging');
  };
  canvas.addEventListener('pointerup', endDrag);
  canvas.addEventListener('pointercancel', endDrag);

  canvas.addEventListener('click', (event) => {
    if (suppressClick) return;
    const node = event.target.closest('.node');
    if (node) navigateToTask(node.dataset.task);
  });

  canvas.addEventListener('wheel', (event) => {
    event.preventDefault();
    // Lines (Firefox) step much more per event than pixels.
    const delta = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
    zoomAt(event.clientX, event.clientY, Math.exp(-delta * 0.0015));
  }, { passive: false });

  $('fit').addEventListener('click', () => fitGraph('all'));
  $('fit-width').addEventListener('click', () => fitGraph('width'));
  $('zoom-in').addEventListener('click', () => zoomCentre(1.25));
  $('zoom-out').addEventListener('click', () => zoomCentre(0.8));

  // The frame changes size with the window, the task panel and its resize handle. Until the user
  // moves the graph, keep it fitted; afterwards keep their scale and corner.
  new ResizeObserver(() => {
    if (!current || !current.view) return;
    if (!viewport.moved && viewport.fitted) fitGraph(viewport.fitted);
    else applyViewport();
  }).observe($('graph-frame'));
}

function renderLegend() {
  const items = TASK_PHASES.map((phase) => el('li', { 'data-phase': phase }, el('span', { class: 'swatch' }), phase));
  items.push(el('li', { class: 'finally' }, el('span', { class: 'swatch' }), 'finally'));
  items.push(el('li', { class: 'fan-out' }, el('span', { class: 'swatch' }), 'forEach'));
  $('legend').replaceChildren(...items);
}

// ---------------------------------------------------------------------------------------------
// Task table: every TaskStatus, fan-out instances included
// ---------------------------------------------------------------------------------------------

function renderTasks(run) {
  const tasks = run.view.tasks || [];
  syncRows($('tasks').tBodies[0], tasks, (task) => task.name,
    (task) => createTaskRow(task.name), (row, task) => fillTaskRow(row, task, run));
  $('tasks-empty').hidden = tasks.length > 0;
}

function createTaskRow(name) {
  const row = el('tr', { 'data-task': name, class: parentOf(name) ? 'instance' : null },
    el('td', { class: 'name' }, el('a', { href: runHash(current.namespace, current.name, name) }, name)),
    el('td', { class: 'phase' }),
    el('td', { class: 'attempts num' }),
    el('td', { class: 'started' }),
    el('td', { class: 'duration num' }),
    el('td', { class: 'reason' }),
  );
  row.addEventListener('click', (event) => {
    if (!event.target.closest('a')) navigateToTask(name);
  });
  return row;
}

function fillTaskRow(row, task, run) {
  row.classList.toggle('selected', task.name === run.selected);
  row.classList.toggle('finally', !!task.finally);
  const phase = row.querySelector('.phase');
  setText(phase, task.phase);
  phase.dataset.phase = task.phase;
  setText(row.querySelector('.attempts'), task.attempts || 0);
  setText(row.querySelector('.started'), formatClock(task.startedAt));
  showDuration(row.querySelector('.duration'), task.startedAt, task.finishedAt);
  const reason = row.querySelector('.reason');
  setText(reason, task.reason || (task.exitCode != null && task.exitCode !== 0 ? `exit ${task.exitCode}` : ''));
  reason.title = task.message || '';
}

// ---------------------------------------------------------------------------------------------
// Task panel
// ---------------------------------------------------------------------------------------------

function navigateToTask(task) {
  if (!current) return;
  navigate(runHash(current.namespace, current.name, task));
}

/** Selection comes from the address (route()); this only shows it. */
function selectTask(task) {
  const run = current;
  if (!run) return;
  if (run.selected !== task) {
    run.selected = task;
    run.attempt = null; // a newly selected task starts at its latest attempt
  }
  if (!run.view) return; // the GET will render the selection
  updateGraph(run);
  renderTasks(run);
  renderTaskPanel(run);
}

function renderTaskPanel(run) {
  const panel = $('task');
  const name = run.selected;
  panel.hidden = !name;
  document.body.classList.toggle('with-task', !!name);
  if (!name) {
    stopLogs();
    return;
  }
  // A task with no status yet (not reached) is shown as Pending with nothing else to say.
  const status = run.statuses.get(name) || { name, phase: 'Pending', attempts: 0 };
  const fanOut = isFanOut(run, name);
  const parent = parentOf(name);

  setText($('task-name'), name);
  setText($('task-kind'), fanOut ? 'forEach task' : parent ? 'Instance' : status.finally ? 'finally task' : 'Task');
  setText($('task-phase'), status.phase);
  $('task-phase').dataset.phase = status.phase;
  renderTaskParent(run, parent);
  renderTaskFacts(status);
  setText($('task-reason'), status.reason || '');
  setText($('task-message'), status.message || '');
  $('task-note').hidden = !status.reason && !status.message;
  $('task-note').dataset.phase = status.phase; // a failure's note is tinted red
  renderInstances(run, name, status, fanOut);
  renderAttempts(run, status, fanOut);
  renderOutputs(status.outputs);
  updateLogs(run, status, fanOut);
}

function renderTaskParent(run, parent) {
  const line = $('task-parent');
  line.hidden = !parent;
  if (!parent || !rebuildWhenChanged(line, [run.namespace, run.name, parent])) return;
  line.replaceChildren('Instance of ', el('a', { href: runHash(run.namespace, run.name, parent) }, parent));
}

/** Facts that exist for this task, as a definition list. */
function renderTaskFacts(status) {
  const keys = ['startedAt', 'finishedAt', 'exitCode', 'nextAttemptAt', 'job', 'infraRetries', 'reusedFrom'];
  const shown = keys.map((key) => status[key]);
  if (!rebuildWhenChanged($('task-facts'), shown)) return;
  const facts = [];
  const add = (term, value) => { if (value != null && value !== '') facts.push([term, value]); };
  add('Started', formatClock(status.startedAt));
  add('Finished', formatClock(status.finishedAt));
  if (status.startedAt) {
    const duration = el('span');
    showDuration(duration, status.startedAt, status.finishedAt);
    add('Duration', duration);
  }
  add('Exit code', status.exitCode);
  if (status.nextAttemptAt) add('Next attempt', formatClock(status.nextAttemptAt));
  add('Job', status.job);
  if (status.infraRetries) add('Infra retries', status.infraRetries);
  add('Reused from', status.reusedFrom);
  const items = facts.map(([term, value]) => el('div', {}, el('dt', {}, term), el('dd', {}, value)));
  $('task-facts').replaceChildren(...items);
}

function renderInstances(run, name, status, fanOut) {
  const section = $('task-instances-section');
  section.hidden = !fanOut;
  if (!fanOut) return;
  const total = status.instances;
  const progress = instanceProgress(run, name, status);
  setText($('task-instances-count'), progress ? `${progress.done}/${progress.total} done` : 'not known yet');
  const phases = [];
  for (let i = 0; i < (total || 0); i += 1) {
    const instance = run.statuses.get(`${name}[${i}]`);
    phases.push((instance && instance.phase) || 'Pending');
  }
  if (!rebuildWhenChanged($('task-instances'), [run.namespace, run.name, name, phases])) return;
  const items = phases.map((phase, i) => {
    const instanceName = `${name}[${i}]`;
    return el('li', {},
      el('a', {
        href: runHash(run.namespace, run.name, instanceName), class: 'instance',
        'data-instance': i, 'data-phase': phase, title: `${instanceName}: ${phase}`,
      }, el('span', { class: 'dot' }), String(i)));
  });
  $('task-instances').replaceChildren(...items);
}

/** One entry per attempt, from `history` where the server kept it (the last 10). */
function renderAttempts(run, status, fanOut) {
  const count = status.attempts || 0;
  $('task-attempts-section').hidden = fanOut && count === 0;
  const shown = run.attempt || count;
  const data = [status.name, count, shown, status.phase, status.history,
    status.startedAt, status.finishedAt, status.podStartedAt];
  if (!rebuildWhenChanged($('task-attempts'), data)) return;
  const history = new Map((status.history || []).map((record) => [record.attempt, record]));
  const items = [];
  for (let n = 1; n <= count; n += 1) {
    const record = history.get(n);
    const latest = n === count;
    items.push(attemptItem(n, record, latest ? status : null, n === shown));
  }
  if (!items.length) items.push(el('li', { class: 'empty' }, 'Not started yet.'));
  $('task-attempts').replaceChildren(...items);
}

/** One attempt: its number, how it ended, how long it took. `status` is given for the latest. */
function attemptItem(n, record, status, selected) {
  const times = record || (status ? latestAttemptTimes(status, n) : {});
  let outcome;
  let phase;
  if (record) {
    const ok = record.reason ? record.reason === 'Completed' : record.exitCode === 0;
    phase = ok ? 'Succeeded' : 'Failed';
    outcome = record.reason || (record.exitCode != null ? `exit ${record.exitCode}` : '');
    if (record.reason && record.exitCode != null && record.exitCode !== 0) outcome += ` (exit ${record.exitCode})`;
  } else if (status) {
    phase = status.phase;
    outcome = status.phase;
  } else {
    phase = 'Unknown';
    outcome = 'no record';
  }
  const duration = el('span', { class: 'attempt-duration' });
  showDuration(duration, times.startedAt, times.finishedAt);
  const item = el('li', {
    'data-attempt': n, 'data-phase': phase, class: selected ? 'selected' : null,
    tabindex: '0', role: 'button', title: record && record.message ? record.message : null,
  },
  el('span', { class: 'dot' }),
  el('span', { class: 'attempt-number' }, `#${n}`),
  el('span', { class: 'attempt-outcome' }, outcome),
  duration);
  const choose = () => selectAttempt(n);
  item.addEventListener('click', choose);
  onActivateKey(item, choose);
  return item;
}

/**
 * When the latest attempt ran. The task's startedAt is its first attempt's, so it only serves for
 * attempt 1; later ones have the Pod's start when the server knows it, else no duration.
 */
function latestAttemptTimes(status, n) {
  const startedAt = status.podStartedAt || (n === 1 ? status.startedAt : null);
  return { startedAt, finishedAt: status.finishedAt };
}

function selectAttempt(n) {
  const run = current;
  if (!run) return;
  const status = run.statuses.get(run.selected);
  // Choosing the latest attempt means "follow the latest", so a retry shows up by itself.
  run.attempt = status && n === status.attempts ? null : n;
  renderTaskPanel(run);
}

function renderOutputs(outputs) {
  if (!rebuildWhenChanged($('task-outputs'), outputs || null)) return;
  const entries = outputs && typeof outputs === 'object' ? Object.entries(outputs) : [];
  const items = entries.map(([key, value]) => el('div', {},
    el('dt', {}, key),
    el('dd', {}, typeof value === 'string' ? value : JSON.stringify(value, null, 2))));
  if (!items.length) items.push(el('div', { class: 'empty' }, 'No outputs.'));
  $('task-outputs').replaceChildren(...items);
}

// ---------------------------------------------------------------------------------------------
// Logs: streamed with fetch so they show as they are written
// ---------------------------------------------------------------------------------------------

/** Whether a task has logs worth asking for. */
function hasLogs(status) {
  return (status.attempts || 0) > 0 || status.phase === 'Running';
}

/**
 * Whether the attempt whose log is shown still runs: the latest attempt of a Running task. (A
 * task waiting to retry is Pending: its latest attempt has ended.) Only such a log can still
 * turn up after a 404/400, so only then is a failed request tried again.
 */
function attemptRunning(run, status) {
  if (run.gone) return false;
  const latest = !run.attempt || run.attempt === status.attempts;
  return latest && status.phase === 'Running';
}

/**
 * Starts, keeps or replaces the log stream for what the panel shows. The key names the stream:
 * when it stays the same the open stream (or the pending retry) goes on, so live updates don't
 * restart it; retries run on their own timer (see failLogs), not on live updates.
 */
function updateLogs(run, status, fanOut) {
  let note = '';
  if (run.gone) note = 'The run was deleted.';
  else if (fanOut) note = 'A forEach task runs as its instances: pick one to see its logs.';
  else if (status.phase === 'Skipped' && !hasLogs(status)) note = 'Skipped: it never ran.';
  else if (!hasLogs(status)) note = 'No logs yet: the task has not started.';
  // Following the latest attempt puts its number in the key, so a retry opens the new log.
  const key = note
    ? `note:${note}`
    : `${run.namespace}/${run.name}/${status.name}#${run.attempt || `latest:${status.attempts}`}`;

  const shownAttempt = run.attempt || status.attempts;
  setText($('task-logs-title'), note ? '' : `attempt ${shownAttempt}${run.attempt ? '' : ' (latest)'}`);

  const running = !note && attemptRunning(run, status);
  if (key === logs.key) {
    const ended = logs.running && !running;
    logs.running = running;
    // The attempt ended while we were waiting to try again: one last try now (its Pod may have
    // come and gone between two tries), then no more. A request in flight needs nothing here:
    // failLogs makes the last try if it fails.
    if (ended && logs.timer) {
      clearTimeout(logs.timer);
      logs.timer = null;
      streamLogs();
    }
    return;
  }
  stopLogs();
  logs.key = key;
  logs.running = running;
  if (note) {
    showLogNote(note);
    return;
  }
  const params = new URLSearchParams({ task: status.name, follow: 'true' });
  if (run.attempt) params.set('attempt', run.attempt);
  logs.url = `${runPath(run.namespace, run.name)}/logs?${params}`;
  streamLogs();
}

/** An empty log box with a word on why it is empty (drawn by CSS from data-empty). */
function showLogNote(note) {
  const box = $('task-logs');
  box.textContent = '';
  box.dataset.empty = note;
  box.classList.remove('log-error');
  setLogStatus('');
}

/**
 * One request for the log of logs.key, shown as it streams. With follow=true the server holds
 * the request open until the container has started, so a long wait for the first byte is normal:
 * it is never aborted on a timer, only when the key changes (stopLogs).
 */
async function streamLogs() {
  const controller = new AbortController();
  logs.controller = controller;
  // Made once the attempt has ended, this is the last try: a failure is not tried again.
  const last = !logs.running;
  const retrying = logs.tries > 0;
  logs.tries += 1;
  const box = $('task-logs');
  const clear = () => {
    box.textContent = '';
    box.dataset.empty = 'Waiting for output…';
    box.classList.remove('log-error');
  };
  // A retry keeps the previous error on screen until it has something better.
  if (!retrying) clear();
  setLogStatus('streaming');
  try {
    const response = await fetch(logs.url, { signal: controller.signal, headers: { Accept: 'text/plain' } });
    if (!response.ok) {
      const message = await errorMessage(response);
      if (controller.signal.aborted) return;
      failLogs(message, response.status, last);
      return;
    }
    if (retrying) clear();
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (controller.signal.aborted) return;
      if (done) break;
      appendLog(decoder.decode(value, { stream: true }));
    }
    appendLog(decoder.decode());
    box.dataset.empty = 'No output.';
    setLogStatus('end');
  } catch (err) {
    if (err.name === 'AbortError' || controller.signal.aborted) return;
    failLogs(`Cannot read the logs: ${err.message}`, null, last);
  } finally {
    if (logs.controller === controller) logs.controller = null;
  }
}

/**
 * Shows why the logs could not be read: instead of them, or after the part already read. A
 * 404/400 (no Pod yet, container not started) is tried again with back-off while the attempt
 * runs, and once more when it has just ended; anything else, a 403 above all, would only fail
 * again and stays on screen until another task or attempt is chosen.
 */
function failLogs(message, status, last) {
  const box = $('task-logs');
  setLogStatus('');
  if (!box.textContent || box.classList.contains('log-error')) {
    box.textContent = message;
    box.classList.add('log-error');
  } else {
    appendLog('\n');
    box.append(el('span', { class: 'log-error' }, message));
  }
  if (!LOG_WAITING_STATUSES.has(status)) return;
  if (logs.running) {
    const key = logs.key;
    logs.timer = setTimeout(() => {
      logs.timer = null;
      if (logs.key === key) streamLogs();
    }, logs.delay);
    logs.delay = Math.min(logs.delay * 2, LOG_RETRY_MAX_MS);
    setLogStatus('waiting');
  } else if (!last) {
    // The attempt ended while this request was out: the last try, straight away.
    streamLogs();
  }
}

/** Appends text, following the bottom unless the user scrolled up to read. */
function appendLog(text) {
  if (!text) return;
  const box = $('task-logs');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  box.append(text);
  if (atBottom) box.scrollTop = box.scrollHeight;
}

/** Ends everything of the current key: the request, the pending retry, the back-off. */
function stopLogs() {
  if (logs.controller) logs.controller.abort();
  clearTimeout(logs.timer);
  Object.assign(logs, {
    key: null, url: null, controller: null, tries: 0, timer: null, delay: LOG_RETRY_FIRST_MS, running: false,
  });
}

function setLogStatus(state) {
  const status = $('task-logs-status');
  status.dataset.state = state;
  status.textContent = { streaming: 'streaming', waiting: 'not there yet, will try again', end: 'end of log' }[state] || '';
}

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

async function loadContext() {
  try {
    Object.assign(context, await api('/api/context'));
  } catch (err) {
    showError(err.message, 'context');
  }
  list.namespace = context.namespace || 'default';
  const mode = $('mode');
  mode.hidden = false;
  mode.textContent = context.mode === 'local' ? 'local' : 'cluster';
  mode.title = context.mode === 'local'
    ? 'A local run on this machine'
    : `Runs on a Kubernetes cluster (default namespace ${list.namespace})`;
}

/** Local mode has one run: open it straight away instead of a one-line list. */
async function openLocalRun() {
  if (context.mode !== 'local' || parseHash().view !== 'list') return;
  try {
    const body = await api(`/api/runs?namespace=${enc(list.namespace)}`);
    const run = (body.runs || [])[0];
    if (run) location.replace(runHash(run.namespace, run.name));
  } catch (err) {
    showError(err.message, 'runs');
  }
}

async function start() {
  renderLegend();
  setupListFilters();
  setupGraphControls();
  for (const action of ACTIONS) $(action).addEventListener('click', () => runAction(action));
  $('task-close').addEventListener('click', () => current && navigate(runHash(current.namespace, current.name)));
  // Escape closes the task panel, unless the user is typing somewhere.
  document.addEventListener('keydown', (event) => {
    const typing = event.target.closest && event.target.closest('input, select, textarea');
    if (event.key === 'Escape' && current && current.selected && !typing) {
      navigate(runHash(current.namespace, current.name));
    }
  });
  setInterval(tick, 1000);

  await loadContext();
  setupNamespaceFilter();
  await openLocalRun();
  window.addEventListener('hashchange', route);
  route();
}

start();
