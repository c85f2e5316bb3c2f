// sumu.js — the browser client of sumu (and of any SUMU-compatible gateway).
//
// One ES module, no dependencies, no build step. The node serves it at
// `/sumu.js`; it also runs in Node.js 20+ (pass `WebSocket` from the `ws`
// package or run with `--experimental-websocket`).
//
//   import { SumuClient } from '/sumu.js';
//   const client = new SumuClient({
//     url: 'wss://push.example.com/push',
//     token: async ({ refresh }) => (await fetch('/my/token', { cache: 'no-store' })).text(),
//   });
//   client.on('state', (e) => console.log('state', e.state, e.reason ?? ''));
//   client.on('data', (e) => console.log('data', e.data));
//   client.on('presence', (p) => console.log(p.user_id, p.status));
//   client.connect();
//   await client.publish({ text: 'hello' }); // resolved by the node's ack
//
// Invariants this module keeps:
// - At most one socket at a time; callbacks of a socket that was replaced or
//   given up are ignored (every socket carries its generation number).
// - Reconnect delays are `random() * min(maxDelayMs, baseDelayMs * 2^attempt)`
//   ("full jitter"); the attempt counter is reset only after a connection
//   stayed open for `stableAfterMs`, so a server that accepts and then drops
//   at once cannot cause a tight loop.
// - Never a reconnect loop after a refusal that cannot heal:
//   * a close with 1008 (policy violation, e.g. rate-limit abuse) ends in
//     state `closed`, reason `policy_violation`;
//   * browsers cannot see the HTTP status of a refused upgrade (a 401 for a
//     bad token looks like close 1006, just like an unreachable node). So a
//     socket that fails BEFORE it opened is counted as a "failed connect":
//     the next attempt first asks the token provider for a fresh token
//     (`refresh: true`), and after `maxFailedConnects` failed connects in a
//     row the client gives up with state `closed`, reason `refused`.
//     A socket that opens resets that count.
// - Every pending publish/send promise settles: by its ack, by the error
//   frame with the same id, by `ackTimeoutMs`, or when its socket is lost.
// - All time goes through the `clock` option, so timing is testable with a
//   fake clock.
// - With `recover: true` the client opts into the node's recovery window:
//   every socket asks `recover=1`, every reconnect resumes `since` the last
//   cursor the node gave (from a notification, `recovered` or
//   `recovery_failed`), so what was sent while it was away is replayed,
//   exactly once, before live notifications; `recovered` / `recovery_failed`
//   tell the app (on `recovery_failed`, refetch from your backend).

/** @typedef {'connecting' | 'open' | 'reconnecting' | 'closed'} SumuState */

/**
 * Given to the token provider before each connection attempt.
 * @typedef {object} TokenRequest
 * @property {boolean} refresh true when the previous attempt failed before the
 *   socket opened (possibly a refused token): do not return a cached token.
 * @property {number} attempt connection attempts since the last stable connection.
 */

/**
 * A token, or a function that returns one (possibly asynchronously). It is
 * called before every connection attempt.
 * @typedef {string | ((req: TokenRequest) => string | Promise<string>)} TokenSource
 */

/**
 * The timers the client uses; inject a fake one in tests.
 * @typedef {object} Clock
 * @property {() => number} now milliseconds
 * @property {(fn: () => void, ms: number) => any} setTimeout
 * @property {(handle: any) => void} clearTimeout
 */

/**
 * @typedef {object} SumuOptions
 * @property {string} url WebSocket URL of the push endpoint, e.g. `wss://host/push`.
 * @property {TokenSource} token the JWT, or a provider of it.
 * @property {string} [tokenParam='authorization'] query parameter carrying the token.
 * @property {number} [baseDelayMs=500] first reconnect delay cap.
 * @property {number} [maxDelayMs=30000] largest reconnect delay cap.
 * @property {number} [stableAfterMs=10000] an open connection this old resets the backoff.
 * @property {number} [maxFailedConnects=8] failed connects (before open) in a row before giving up.
 * @property {number} [pingIntervalMs=30000] keepalive `ping` period; keep it below the node's idle timeout.
 * @property {number} [pongTimeoutMs=10000] a ping unanswered this long means a dead connection.
 * @property {number} [ackTimeoutMs=10000] a publish/send unanswered this long is rejected.
 * @property {number} [connectTimeoutMs=15000] an attempt not open after this long is a failed connect.
 * @property {boolean} [recover=false] opt into the recovery window (`recover=1`, resume `since` the last cursor).
 * @property {string} [cursor] a cursor to resume from on the first connect (e.g. one the app kept in
 *   sessionStorage from `client.cursor`); later connects use the newest one.
 * @property {Clock} [clock] timers (default: the global ones and `Date.now`).
 * @property {() => number} [random] uniform in [0, 1) (default `Math.random`).
 * @property {any} [WebSocket] WebSocket constructor (default `globalThis.WebSocket`).
 */

/**
 * Emitted on every state change.
 * @typedef {object} StateEvent
 * @property {SumuState} state
 * @property {SumuState} previous
 * @property {string} [reason] why: `client_close`, `closed_by_server`, `failed_connect`,
 *   `no_pong`, `policy_violation`, `refused`, `no_token`, ...
 * @property {number} [code] the WebSocket close code, when a close caused it
 * @property {number} [delayMs] for `reconnecting`: the wait before the next attempt
 * @property {number} [attempt] for `reconnecting`: the attempt number (0-based)
 */

/**
 * Emitted for every frame from the backend (a notification's `data`).
 * @typedef {object} DataEvent
 * @property {any} data the parsed JSON (undefined when it was not JSON)
 * @property {string} raw the frame's text (with `recover`: the envelope's)
 * @property {boolean} [replayed] with `recover`: true for what the node replays
 *   before `recovered` (sent while the client was away)
 * @property {string} [cursor] with `recover`: the cursor after this notification
 */

/**
 * With `recover`: the node replayed what was missed (`replayed` notifications,
 * each already emitted as `data`), and live notifications follow.
 * @typedef {object} RecoveredEvent
 * @property {number} replayed
 * @property {string} cursor
 */

/**
 * With `recover`: the node could not prove what was missed, so it replayed
 * nothing; refetch from your backend. Live notifications follow (after
 * `unavailable` the node closes the socket and the client resumes later).
 * @typedef {object} RecoveryFailedEvent
 * @property {'position_expired' | 'too_far_behind' | 'invalid_cursor' | 'unavailable' | 'disabled'} code
 * @property {string} cursor
 */

/**
 * A presence change, from `{"type":"presence","message":{...}}` data.
 * @typedef {object} PresenceEvent
 * @property {string} user_id
 * @property {'ONLINE' | 'OFFLINE'} status
 * @property {number} timestamp ms since the epoch
 */

/**
 * @typedef {object} PongEvent
 * @property {number} rttMs round trip of the `ping` action
 * @property {string} connectionId this socket's id on the node
 */

/**
 * @typedef {object} ServerErrorEvent
 * @property {number} statusCode
 * @property {string} message
 */

/**
 * @typedef {object} FrameEvent
 * @property {'in' | 'out'} direction
 * @property {string} text
 */

/**
 * @typedef {{
 *   state: StateEvent, open: {},
 *   data: DataEvent, presence: PresenceEvent, pong: PongEvent,
 *   error: ServerErrorEvent, frame: FrameEvent,
 *   recovered: RecoveredEvent, recovery_failed: RecoveryFailedEvent
 * }} SumuEvents
 */

/** Close codes after which the client does not reconnect by itself. */
const NO_RETRY_CODES = new Set([1008]);

/** @type {Clock} */
const REAL_CLOCK = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(h),
};

/** Why a publish/send promise was rejected. */
export class SumuError extends Error {
  /**
   * @param {string} code `server` (an error frame), `ack_timeout`, `connection_lost`, `not_open`
   * @param {string} message
   * @param {number} [statusCode] the error frame's statusCode (code `server`)
   */
  constructor(code, message, statusCode) {
    super(message);
    this.name = 'SumuError';
    this.code = code;
    this.statusCode = statusCode;
  }
}

/**
 * The delay before reconnect attempt `attempt` (0-based): full jitter,
 * `random() * min(maxDelayMs, baseDelayMs * 2^attempt)`.
 * @param {number} attempt
 * @param {{ baseDelayMs: number, maxDelayMs: number }} opts
 * @param {() => number} random
 * @returns {number}
 */
export function backoffDelay(attempt, { baseDelayMs, maxDelayMs }, random) {
  const cap = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/**
 * A connection to a sumu node that keeps itself alive.
 */
export class SumuClient {
  /** @param {SumuOptions} options */
  constructor(options) {
    if (!options || typeof options.url !== 'string') throw new TypeError('SumuClient: `url` is required');
    if (options.token === undefined) throw new TypeError('SumuClient: `token` is required');
    const o = options;
    this.url = o.url;
    this.options = {
      tokenParam: o.tokenParam ?? 'authorization',
      baseDelayMs: o.baseDelayMs ?? 500,
      maxDelayMs: o.maxDelayMs ?? 30000,
      stableAfterMs: o.stableAfterMs ?? 10000,
      maxFailedConnects: o.maxFailedConnects ?? 8,
      pingIntervalMs: o.pingIntervalMs ?? 30000,
      pongTimeoutMs: o.pongTimeoutMs ?? 10000,
      ackTimeoutMs: o.ackTimeoutMs ?? 10000,
      connectTimeoutMs: o.connectTimeoutMs ?? 15000,
      recover: o.recover ?? false,
    };
    /**
     * With `recover`: the newest cursor the node gave (null before the first);
     * keep it (e.g. in sessionStorage) to resume after a page reload.
     * @type {string | null}
     */
    this.cursor = typeof o.cursor === 'string' && o.cursor !== '' ? o.cursor : null;
    /** With `recover`: true from a socket's open until its `recovered`/`recovery_failed`. */
    this.resuming = false;
    this._token = o.token;
    this._clock = o.clock ?? REAL_CLOCK;
    this._random = o.random ?? Math.random;
    this._WebSocket = o.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError('SumuClient: no WebSocket available; pass options.WebSocket');
    }
    /** @type {SumuState} */
    this.state = 'closed';
    /** The node's id of the current socket, learnt from the first pong. */
    this.connectionId = null;
    /** Round trip of the last keepalive ping, in ms. */
    this.lastRttMs = null;
    /** Why the client is closed (null while it is not). */
    this.closeReason = 'not_started';
    this._listeners = new Map();
    this._gen = 0;
    this._ws = null;
    this._attempt = 0;
    this._failedConnects = 0;
    this._timers = new Set();
    this._retryTimer = null;
    this._stableTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    /** @type {{ at: number, resolve: (rtt: number) => void, reject: (e: Error) => void }[]} */
    this._pings = [];
    /** @type {Map<string, { resolve: (f: any) => void, reject: (e: Error) => void, timer: any }>} */
    this._pending = new Map();
    this._nextId = 1;
  }

  /**
   * Subscribe to an event. Returns a function that unsubscribes.
   * @template {keyof SumuEvents} K
   * @param {K} event
   * @param {(e: SumuEvents[K]) => void} fn
   * @returns {() => void}
   */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * Start connecting. While `reconnecting`, skips the rest of the wait and
   * tries at once; while `connecting` or `open`, does nothing.
   */
  connect() {
    if (this.state === 'reconnecting' && this._retryTimer != null) {
      this._retryTimer = this._cancel(this._retryTimer);
      this._openSocket(true);
      return;
    }
    if (this.state !== 'closed') return;
    this._attempt = 0;
    this._failedConnects = 0;
    this.closeReason = null;
    this._setState('connecting', {});
    this._openSocket(false);
  }

  /** Close for good (until `connect()` is called again). */
  close() {
    this._giveUp('client_close', undefined);
  }

  /**
   * Publish to the messages topic (`{"action":"publish"}`).
   * @param {any} message any JSON value
   * @returns {Promise<{type: 'ack', statusCode: number, id: string}>} the ack frame
   */
  publish(message) {
    return this._request('publish', message);
  }

  /**
   * Send to the messages queue (`{"action":"send"}`).
   * @param {any} message any JSON value
   * @returns {Promise<{type: 'ack', statusCode: number, id: string}>} the ack frame
   */
  send(message) {
    return this._request('send', message);
  }

  /**
   * Send a `ping` action now.
   * @returns {Promise<number>} the round trip in ms
   */
  ping() {
    return new Promise((resolve, reject) => {
      if (!this._sendPing(resolve, reject)) reject(new SumuError('not_open', 'not connected'));
    });
  }

  // ---- internals -------------------------------------------------------

  _emit(event, detail) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(detail);
      } catch (e) {
        // A listener's bug must not break the connection logic.
        globalThis.queueMicrotask?.(() => {
          throw e;
        });
      }
    }
  }

  _setState(state, extra) {
    const previous = this.state;
    this.state = state;
    this._emit('state', { state, previous, ...extra });
  }

  _after(ms, fn) {
    const handle = this._clock.setTimeout(() => {
      this._timers.delete(handle);
      fn();
    }, ms);
    this._timers.add(handle);
    return handle;
  }

  _cancel(handle) {
    if (handle == null) return null;
    this._clock.clearTimeout(handle);
    this._timers.delete(handle);
    return null;
  }

  async _getToken(refresh) {
    const t = this._token;
    return typeof t === 'function' ? t({ refresh, attempt: this._attempt }) : t;
  }

  async _openSocket(refresh) {
    const gen = ++this._gen;
    let token;
    try {
      token = await this._getToken(refresh);
    } catch (e) {
      if (gen !== this._gen) return;
      // The provider failed (offline?): a failed connect, retried with backoff.
      this._afterFailure(gen, 'token_provider_failed', undefined, false);
      return;
    }
    if (gen !== this._gen) return;
    if (typeof token !== 'string' || token === '') {
      this._giveUp('no_token', undefined);
      return;
    }
    const sep = this.url.includes('?') ? '&' : '?';
    let url = `${this.url}${sep}${encodeURIComponent(this.options.tokenParam)}=${encodeURIComponent(token)}`;
    if (this.options.recover) {
      url += '&recover=1';
      if (this.cursor) url += `&since=${encodeURIComponent(this.cursor)}`;
    }
    let ws;
    try {
      ws = new this._WebSocket(url);
    } catch (e) {
      this._giveUp('bad_url', undefined);
      return;
    }
    this._ws = ws;
    let opened = false;
    const connectTimer = this._after(this.options.connectTimeoutMs, () => {
      if (gen === this._gen && !opened) this._lose(gen, 'connect_timeout', undefined, false);
    });
    ws.onopen = () => {
      if (gen !== this._gen) return;
      opened = true;
      this.resuming = this.options.recover;
      this._cancel(connectTimer);
      this._failedConnects = 0;
      this._setState('open', {});
      this._emit('open', {});
      this._stableTimer = this._after(this.options.stableAfterMs, () => {
        this._attempt = 0;
      });
      // An immediate ping learns the connection id and the first round trip.
      this._sendPing(null, null);
      this._schedulePing(gen);
    };
    ws.onmessage = (ev) => {
      if (gen !== this._gen) return;
      this._onFrame(typeof ev.data === 'string' ? ev.data : String(ev.data));
    };
    ws.onerror = () => {
      // Browsers follow an error with a close event (code 1006); some
      // runtimes (Node 20's undici) do not. Either way the socket is done.
      this._cancel(connectTimer);
      if (gen !== this._gen) return;
      this._lose(gen, opened ? 'closed_by_server' : 'failed_connect', 1006, opened);
    };
    ws.onclose = (ev) => {
      this._cancel(connectTimer);
      if (gen !== this._gen) return;
      this._lose(gen, opened ? 'closed_by_server' : 'failed_connect', ev.code, opened);
    };
  }

  _schedulePing(gen) {
    this._pingTimer = this._after(this.options.pingIntervalMs, () => {
      if (gen !== this._gen || this.state !== 'open') return;
      this._sendPing(null, null);
      this._schedulePing(gen);
    });
  }

  /** Sends a ping action; false when there is no open socket. */
  _sendPing(resolve, reject) {
    if (!this._rawSend({ action: 'ping' })) return false;
    this._pings.push({ at: this._clock.now(), resolve, reject });
    if (this._pongTimer == null) this._armPongTimer();
    return true;
  }

  _armPongTimer() {
    const oldest = this._pings[0];
    if (!oldest) return;
    const gen = this._gen;
    const wait = Math.max(0, oldest.at + this.options.pongTimeoutMs - this._clock.now());
    this._pongTimer = this._after(wait, () => {
      this._pongTimer = null;
      if (gen === this._gen) this._lose(gen, 'no_pong', undefined, true);
    });
  }

  _rawSend(obj) {
    const ws = this._ws;
    if (!ws || this.state !== 'open' || ws.readyState !== 1) return false;
    const text = JSON.stringify(obj);
    try {
      ws.send(text);
    } catch (e) {
      return false;
    }
    this._emit('frame', { direction: 'out', text });
    return true;
  }

  _request(action, message) {
    return new Promise((resolve, reject) => {
      const id = `c${this._nextId++}`;
      if (!this._rawSend({ action, message, id })) {
        reject(new SumuError('not_open', 'not connected'));
        return;
      }
      const timer = this._after(this.options.ackTimeoutMs, () => {
        if (this._pending.delete(id)) reject(new SumuError('ack_timeout', `no ack for ${action} ${id}`));
      });
      this._pending.set(id, { resolve, reject, timer });
    });
  }

  _onFrame(text) {
    this._emit('frame', { direction: 'in', text });
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      this._emit('data', { data: undefined, raw: text });
      return;
    }
    const isObj = f !== null && typeof f === 'object' && !Array.isArray(f);
    // The node's own frames carry a numeric statusCode; anything else is data.
    if (isObj && typeof f.statusCode === 'number') {
      if (f.type === 'pong') return this._onPong(f);
      if (f.type === 'ack' || f.type === 'error') {
        const id = f.id == null ? null : String(f.id);
        const p = id == null ? undefined : this._pending.get(id);
        if (p) {
          this._pending.delete(id);
          this._cancel(p.timer);
          if (f.type === 'ack') p.resolve(f);
          else p.reject(new SumuError('server', String(f.message ?? 'error'), f.statusCode));
          return;
        }
        if (f.type === 'error') {
          this._emit('error', { statusCode: f.statusCode, message: String(f.message ?? '') });
          return;
        }
        return; // an ack nobody waits for any more (timed out)
      }
    }
    if (this.options.recover && isObj && typeof f.cursor === 'string') {
      // A recovering socket: the backend's data is inside the envelope.
      if (f.type === 'notification') {
        this.cursor = f.cursor;
        this._onData(f.data, text, { replayed: this.resuming, cursor: f.cursor });
        return;
      }
      if (f.type === 'recovered' || f.type === 'recovery_failed') {
        this.cursor = f.cursor;
        this.resuming = false;
        if (f.type === 'recovered') {
          this._emit('recovered', { replayed: Number(f.replayed) || 0, cursor: f.cursor });
        } else {
          this._emit('recovery_failed', { code: f.code, cursor: f.cursor });
        }
        return;
      }
    }
    this._onData(f, text, {});
  }

  _onData(f, text, extra) {
    this._emit('data', { data: f, raw: text, ...extra });
    const isObj = f !== null && typeof f === 'object' && !Array.isArray(f);
    if (isObj && f.type === 'presence' && f.message && typeof f.message.user_id === 'string') {
      this._emit('presence', {
        user_id: f.message.user_id,
        status: f.message.status,
        timestamp: f.message.timestamp,
      });
    }
  }

  _onPong(f) {
    const ping = this._pings.shift();
    this._pongTimer = this._cancel(this._pongTimer);
    if (this._pings.length) this._armPongTimer();
    if (typeof f.connectionId === 'string') this.connectionId = f.connectionId;
    if (!ping) return;
    const rttMs = this._clock.now() - ping.at;
    this.lastRttMs = rttMs;
    ping.resolve?.(rttMs);
    this._emit('pong', { rttMs, connectionId: this.connectionId });
  }

  /** Drops the current socket and everything tied to it. */
  _teardown(why) {
    const ws = this._ws;
    this._ws = null;
    this._gen++;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        if (ws.readyState === 0 || ws.readyState === 1) ws.close(4000, why.slice(0, 100));
      } catch {
        // Closing an already-failing socket may throw; it is gone either way.
      }
    }
    this.connectionId = null;
    this.resuming = false;
    this._stableTimer = this._cancel(this._stableTimer);
    this._pingTimer = this._cancel(this._pingTimer);
    this._pongTimer = this._cancel(this._pongTimer);
    for (const p of this._pings.splice(0)) p.reject?.(new SumuError('connection_lost', why));
    for (const [id, p] of this._pending) {
      this._pending.delete(id);
      this._cancel(p.timer);
      p.reject(new SumuError('connection_lost', `connection lost before the ack (${why})`));
    }
  }

  /** A socket went away (or is considered dead): reconnect or give up. */
  _lose(gen, reason, code, opened) {
    if (gen !== this._gen) return;
    if (code !== undefined && NO_RETRY_CODES.has(code)) {
      this._giveUp('policy_violation', code);
      return;
    }
    this._teardown(reason);
    this._afterFailure(this._gen, reason, code, opened);
  }

  _afterFailure(gen, reason, code, opened) {
    if (gen !== this._gen) return;
    let refresh = false;
    if (!opened) {
      this._failedConnects++;
      refresh = true;
      if (this._failedConnects >= this.options.maxFailedConnects) {
        this._giveUp('refused', code);
        return;
      }
    }
    const attempt = this._attempt++;
    const delayMs = backoffDelay(attempt, this.options, this._random);
    this._setState('reconnecting', { reason, code, delayMs, attempt });
    this._retryTimer = this._after(delayMs, () => {
      this._retryTimer = null;
      if (gen === this._gen && this.state === 'reconnecting') this._openSocket(refresh);
    });
  }

  _giveUp(reason, code) {
    this._retryTimer = this._cancel(this._retryTimer);
    this._teardown(reason);
    for (const h of this._timers) this._clock.clearTimeout(h);
    this._timers.clear();
    this.closeReason = reason;
    if (this.state !== 'closed') this._setState('closed', { reason, code });
  }
}
