// app.js — the sumu demo page: sign in, who is online, a chat with the three
// SUMU push modes, all on sumu.js.
//
// Invariant: every string that comes from a user, a token or the network is
// put in the page with textContent (or as an attribute value), never parsed
// as HTML. There is no innerHTML in this file.
//
// The chat needs the demo backend (node/src/demo/logic.rs): in --dev it runs in
// the node, against a cluster it is `sumu-demo-backend`. The page publishes
//   {"type":"message","message":{"text","push_mode","users"?}}
//   {"type":"get_connected_users"}
// and receives `message`, `presence` and `connected_users` data.
//
// It opts into the recovery window (`recover: true`): after a reconnect,
// what was sent meanwhile is replayed (marked "recovered" in the feed) and
// the page says "N missed messages recovered", or why it could not.
import { SumuClient } from '/sumu.js';

const $ = (id) => document.getElementById(id);
const MAX_FEED = 300;
const MAX_FRAMES = 200;

/** @type {SumuClient | null} */
let client = null;
let me = null;
/** user id -> { since: number } of the users online, me included */
const online = new Map();
/** users ticked for MULTICAST */
const chosen = new Set();
let countdown = null;
/** The socket was lost since the page joined: a resume can have missed something. */
let wasAway = false;

const devConfig = fetch('/dev/config')
  .then((r) => (r.ok ? r.json() : null))
  .catch(() => null);

function wsUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

// ---- sign in / out -------------------------------------------------------

$('signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showSigninError(null);
  const jwt = $('jwt').value.trim();
  const cfg = await devConfig;
  let token;
  let url;
  if (jwt) {
    url = $('url').value.trim() || wsUrl(cfg?.path ?? '/push');
    token = jwt;
    me = subjectOf(jwt);
    if (!me) return showSigninError('That does not look like a JWT (no readable "sub").');
  } else {
    const name = $('name').value.trim();
    if (!name) return showSigninError('Pick a name first.');
    if (!cfg) return showSigninError('This node is not in --dev mode: paste a JWT and URL instead.');
    me = name;
    url = wsUrl(cfg.path);
    // A fresh dev token before every (re)connect: a restarted node has a new key.
    token = async () => {
      const r = await fetch(`/dev/token?sub=${encodeURIComponent(name)}`, { cache: 'no-store' });
      if (!r.ok) throw new Error(`token: HTTP ${r.status}`);
      return (await r.json()).token;
    };
  }
  start(url, token);
});

$('leave').addEventListener('click', () => {
  client?.close();
  client = null;
  me = null;
  online.clear();
  chosen.clear();
  $('feed').replaceChildren();
  $('app').hidden = true;
  $('frames-panel').hidden = true;
  $('frames').replaceChildren();
  $('signin').hidden = false;
  $('me').hidden = true;
  $('leave').hidden = true;
  setState('closed', 'offline');
  $('latency').textContent = '– ms';
});

function showSigninError(text) {
  $('signin-error').hidden = !text;
  $('signin-error').textContent = text ?? '';
}

/** The `sub` of a JWT, read without verification (the node verifies). */
function subjectOf(jwt) {
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    const sub = JSON.parse(new TextDecoder().decode(bytes)).sub;
    return typeof sub === 'string' && sub ? sub : null;
  } catch {
    return null;
  }
}

// ---- the connection --------------------------------------------------------

function start(url, token) {
  $('signin').hidden = true;
  $('app').hidden = false;
  $('frames-panel').hidden = false;
  $('me').hidden = false;
  $('leave').hidden = false;
  $('me').textContent = me;
  $('me').title = `signed in as ${me}`;
  online.clear();
  online.set(me, { since: Date.now() });
  renderUsers();

  wasAway = false;
  client = new SumuClient({ url, token, pingIntervalMs: 10000, maxFailedConnects: 12, recover: true });
  client.on('state', onState);
  client.on('recovered', onRecovered);
  client.on('recovery_failed', onRecoveryFailed);
  client.on('open', () => askForUsers(0));
  client.on('pong', (e) => {
    $('latency').textContent = `${e.rttMs} ms`;
  });
  client.on('data', (e) => onData(e.data, e.replayed === true));
  client.on('error', (e) => system(`The node refused a frame: ${e.message} (${e.statusCode})`, 'warn'));
  client.on('frame', (f) => frameLog(f.direction, f.text));
  client.connect();
  $('text').focus();
}

/**
 * Asks the backend who is online, again (up to 5 times, backing off) until it
 * answers: after a restart the backend may come back later than the socket.
 */
let usersAnswered = false;
let usersRetry = null;
function askForUsers(attempt) {
  clearTimeout(usersRetry);
  if (attempt === 0) usersAnswered = false;
  if (usersAnswered || !client || client.state !== 'open' || attempt >= 5) return;
  client.publish({ type: 'get_connected_users' }).catch(() => {});
  usersRetry = setTimeout(() => askForUsers(attempt + 1), 1500 * 2 ** attempt);
}

function setState(state, label) {
  const pill = $('state');
  pill.dataset.state = state;
  pill.textContent = label;
}

function onState(e) {
  clearInterval(countdown);
  countdown = null;
  const banner = $('banner');
  switch (e.state) {
    case 'connecting':
      setState('connecting', 'connecting…');
      break;
    case 'open':
      setState('open', 'online');
      if (!banner.hidden) system('Reconnected.', 'ok');
      banner.hidden = true;
      break;
    case 'reconnecting': {
      wasAway = true;
      const until = Date.now() + e.delayMs;
      const tick = () => {
        const left = Math.max(0, until - Date.now());
        setState('reconnecting', left > 0 ? `reconnecting in ${(left / 1000).toFixed(1)} s` : 'reconnecting…');
      };
      tick();
      countdown = setInterval(tick, 100);
      banner.hidden = false;
      banner.replaceChildren(
        text('span', `Connection lost (${describe(e)}). Trying again, attempt ${e.attempt + 1}. `),
        button('Retry now', () => client?.connect()),
      );
      // Who is online is unknown until we are back: keep only me.
      for (const u of [...online.keys()]) if (u !== me) online.delete(u);
      renderUsers();
      break;
    }
    case 'closed':
      setState('closed', 'offline');
      if (e.reason && e.reason !== 'client_close') {
        banner.hidden = false;
        banner.replaceChildren(
          text('span', `Disconnected: ${describe(e)}. `),
          button('Connect again', () => client?.connect()),
        );
      }
      break;
  }
}

function describe(e) {
  const reasons = {
    closed_by_server: 'the server closed the socket',
    failed_connect: 'could not connect',
    token_provider_failed: 'could not get a token',
    no_pong: 'no answer to ping',
    connect_timeout: 'connect timed out',
    refused: 'refused: the node is unreachable or does not accept the token',
    policy_violation: 'closed for a policy violation',
    no_token: 'no token',
  };
  const r = reasons[e.reason] ?? e.reason ?? 'unknown';
  return e.code ? `${r}, code ${e.code}` : r;
}

function onRecovered(e) {
  if (!wasAway) return; // the first connect: nothing could be missed
  const n = e.replayed;
  system(n === 1 ? '1 missed message recovered' : `${n} missed messages recovered`, 'ok recovered');
}

function onRecoveryFailed(e) {
  const why = {
    position_expired: 'you were away longer than the node keeps history',
    too_far_behind: 'more was sent than the node replays at once',
    invalid_cursor: 'the saved position was not valid',
    unavailable: 'history could not be read; trying again',
    disabled: 'this node keeps no history',
  };
  if (!wasAway && e.code === 'disabled') return;
  system(`Missed messages could not be recovered (${why[e.code] ?? e.code}).`, 'warn');
}

$('latency').addEventListener('click', () => {
  client?.ping().catch(() => {});
});

// ---- incoming data ---------------------------------------------------------

function onData(d, replayed) {
  if (!d || typeof d !== 'object') return;
  const m = d.message ?? {};
  switch (d.type) {
    case 'message':
      if (typeof m.text === 'string' && typeof m.user_id === 'string') {
        chat({ from: m.user_id, text: m.text, at: m.timestamp, incoming: true, replayed });
      }
      break;
    case 'presence':
      if (typeof m.user_id !== 'string' || m.user_id === me) break;
      if (m.status === 'ONLINE') {
        if (!online.has(m.user_id)) system(`${m.user_id} is online`, 'presence', m.user_id);
        online.set(m.user_id, { since: m.timestamp });
      } else if (m.status === 'OFFLINE') {
        if (online.delete(m.user_id)) system(`${m.user_id} went offline`, 'presence', m.user_id);
        chosen.delete(m.user_id);
      }
      renderUsers();
      break;
    case 'connected_users':
      usersAnswered = true;
      clearTimeout(usersRetry);
      if (Array.isArray(m.users)) {
        for (const u of [...online.keys()]) if (u !== me && !m.users.includes(u)) online.delete(u);
        for (const u of m.users) if (typeof u === 'string' && !online.has(u)) online.set(u, { since: Date.now() });
        renderUsers();
      }
      break;
    default:
      system(`Data of type ${String(d.type)} (see Frames)`, 'muted');
  }
}

// ---- the people list -------------------------------------------------------

function renderUsers() {
  const list = $('users');
  const multicast = mode() === 'MULTICAST';
  const users = [...online.keys()].sort((a, b) => (a === me ? -1 : b === me ? 1 : a.localeCompare(b)));
  list.replaceChildren(
    ...users.map((u) => {
      const li = document.createElement('li');
      li.dataset.user = u;
      const label = document.createElement('label');
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.className = 'pick';
      box.checked = chosen.has(u);
      box.hidden = !multicast;
      box.setAttribute('aria-label', `send to ${u}`);
      box.addEventListener('change', () => {
        if (box.checked) chosen.add(u);
        else chosen.delete(u);
        updateModeHelp();
      });
      label.append(box, avatar(u), text('span', u, 'name'));
      if (u === me) label.append(text('span', 'you', 'tag'));
      li.append(label);
      return li;
    }),
  );
  $('online-count').textContent = String(users.length);
  $('multicast-hint').hidden = !multicast;
  updateModeHelp();
}

function avatar(user) {
  const a = text('span', [...user][0]?.toUpperCase() ?? '?', 'avatar');
  let h = 0;
  for (const c of user) h = (h * 31 + c.codePointAt(0)) >>> 0;
  a.style.background = `hsl(${h % 360} 55% 45%)`;
  a.setAttribute('aria-hidden', 'true');
  return a;
}

// ---- composing ---------------------------------------------------------------

function mode() {
  return document.querySelector('input[name="mode"]:checked')?.value ?? 'BROADCAST';
}

for (const r of document.querySelectorAll('input[name="mode"]')) {
  r.addEventListener('change', renderUsers);
}

function updateModeHelp() {
  const help = {
    BROADCAST: 'Everyone online but you gets it.',
    UNICAST: 'Only you get it back: an echo through the backend.',
    MULTICAST: chosen.size
      ? `To ${[...chosen].join(', ')}.`
      : 'Tick people in the Online list.',
  };
  $('mode-help').textContent = help[mode()];
}

$('composer').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('text');
  const body = input.value.trim();
  if (!body || !client) return;
  const push = mode();
  const message = { text: body, push_mode: push };
  if (push === 'MULTICAST') {
    if (!chosen.size) {
      system('Choose at least one person for a MULTICAST.', 'warn');
      return;
    }
    message.users = [...chosen];
  }
  input.value = '';
  const entry = chat({ from: me, text: body, at: Date.now(), incoming: false, push, to: message.users });
  try {
    await client.publish({ type: 'message', message });
    entry.classList.add('acked');
    entry.querySelector('.meta-state').textContent = 'sent';
  } catch (e) {
    entry.classList.add('failed');
    entry.querySelector('.meta-state').textContent = `not sent: ${e.message}`;
  }
});

// ---- the feed ----------------------------------------------------------------

function chat({ from, text: body, at, incoming, push, to, replayed }) {
  const li = document.createElement('li');
  li.className = `msg ${incoming ? 'in' : 'out'}${from === me ? ' mine' : ''}${replayed ? ' replayed' : ''}`;
  li.dataset.from = from;
  if (push) li.dataset.mode = push;
  const head = document.createElement('div');
  head.className = 'meta';
  head.append(avatar(from), text('span', from, 'who'), text('time', clock(at), 'when'));
  if (!incoming) {
    const where = push === 'MULTICAST' ? `to ${to.join(', ')}` : push.toLowerCase();
    head.append(text('span', where, 'mode'), text('span', 'sending…', 'meta-state'));
  } else if (from === me) {
    head.append(text('span', 'echo', 'mode'));
  }
  if (replayed) head.append(text('span', 'recovered', 'mode'));
  li.append(head, text('p', body, 'body'));
  append(li);
  return li;
}

function system(message, kind = 'muted', user = null) {
  const li = text('li', message, `sys ${kind}`);
  if (user) li.dataset.user = user;
  append(li);
}

function append(li) {
  const feed = $('feed');
  const stick = feed.scrollHeight - feed.scrollTop - feed.clientHeight < 40;
  feed.append(li);
  while (feed.children.length > MAX_FEED) feed.firstElementChild.remove();
  if (stick) feed.scrollTop = feed.scrollHeight;
}

function frameLog(direction, body) {
  const log = $('frames');
  const li = text('li', `${direction === 'in' ? '←' : '→'} ${body}`, direction);
  log.append(li);
  while (log.children.length > MAX_FRAMES) log.firstElementChild.remove();
  if ($('frames-panel').open) li.scrollIntoView({ block: 'nearest' });
}

function clock(ms) {
  const d = new Date(typeof ms === 'number' ? ms : Date.now());
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

function button(label, onClick) {
  const b = text('button', label, 'link');
  b.type = 'button';
  b.addEventListener('click', onClick);
  return b;
}

// Prefill the advanced form's URL with this node's endpoint.
devConfig.then((cfg) => {
  $('url').placeholder = wsUrl(cfg?.path ?? '/push');
});
updateModeHelp();
