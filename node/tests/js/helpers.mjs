// Helpers of the sumu.js tests: a real `sumu-node --dev` process on a
// run-time loopback port (restartable on the same port), dev tokens, a fake
// clock, and a polling `eventually`. Every process started here is killed by
// `stop()`; tests call it in `after`.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const binary = process.env.SUMU_NODE_BIN || join(repo, 'target', 'release', 'sumu-node');

/** A `sumu-node --dev` process (or, with `dev: false`, a plain one). */
export class DevNode {
  constructor(extraArgs = [], { dev = true, env = {} } = {}) {
    this.extraArgs = extraArgs;
    this.dev = dev;
    this.env = env;
    this.child = null;
    this.addr = null;
  }

  /** Starts on `listen` (default: a free port; later: the same port again). */
  async start(listen = this.addr ?? '127.0.0.1:0') {
    const args = [...(this.dev ? ['--dev'] : []), '--listen', listen, ...this.extraArgs];
    const child = spawn(binary, args, {
      env: { ...process.env, SUMU_LOG: 'warn', ...this.env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.child = child;
    this.addr = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('sumu-node did not start in 15 s')), 15000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`sumu-node exited with ${code} before listening`));
      });
      createInterface({ input: child.stdout }).on('line', (line) => {
        const m = line.match(/^sumu-node listening on (\S+)/);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
    });
    return this;
  }

  get http() {
    return `http://${this.addr}`;
  }

  get ws() {
    return `ws://${this.addr}/push`;
  }

  /** A fresh dev token for `sub`. */
  async token(sub) {
    const r = await fetch(`${this.http}/dev/token?sub=${encodeURIComponent(sub)}`);
    if (r.status !== 200) throw new Error(`dev token: HTTP ${r.status}`);
    return (await r.json()).token;
  }

  /** POST /api/notify with the dev API key. */
  async notify(request) {
    const r = await fetch(`${this.http}/api/notify`, {
      method: 'POST',
      headers: { authorization: 'Bearer dev', 'content-type': 'application/json' },
      body: JSON.stringify(request),
    });
    return { status: r.status, body: await r.json() };
  }

  /** Kills the process (SIGKILL: a crash, no close frames) and waits for it. */
  async stop(signal = 'SIGKILL') {
    const child = this.child;
    this.child = null;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await exited;
  }
}

/** Polls `check` until it returns a truthy value or `ms` pass. */
export async function eventually(check, ms = 10000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the next event `name` of `client` that satisfies `pred`. */
export function nextEvent(client, name, pred = () => true, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no '${name}' event within ${ms} ms`));
    }, ms);
    const off = client.on(name, (e) => {
      if (!pred(e)) return;
      clearTimeout(timer);
      off();
      resolve(e);
    });
  });
}

/**
 * A manual clock for SumuClient's `clock` option: timers fire only when the
 * test calls `advance(ms)`, in due order.
 */
export class FakeClock {
  constructor(start = 1_000_000) {
    this.t = start;
    this.seq = 0;
    this.timers = new Map();
  }

  now() {
    return this.t;
  }

  setTimeout(fn, ms) {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn, id });
    return id;
  }

  clearTimeout(id) {
    this.timers.delete(id);
  }

  /** Delays of the pending timers, shortest first. */
  pending() {
    return [...this.timers.values()].map((x) => x.at - this.t).sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, firing due timers in order. */
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const x of this.timers.values()) {
        if (x.at <= end && (!next || x.at < next.at || (x.at === next.at && x.id < next.id))) next = x;
      }
      if (!next) break;
      this.timers.delete(next.id);
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }

  /** The object to pass as `clock`. */
  get api() {
    return {
      now: () => this.now(),
      setTimeout: (fn, ms) => this.setTimeout(fn, ms),
      clearTimeout: (id) => this.clearTimeout(id),
    };
  }
}
