// Benchmark peer for sumu: a Node.js WebSocket server on the `ws` package with the same
// behaviour the load tester uses:
//   GET  /push?authorization=<JWT> (or ?user=NAME, or Authorization: Bearer <JWT>)
//        the user is the JWT `sub`, decoded WITHOUT verifying the signature
//   {"action":"ping"}                      -> {"type":"pong","statusCode":200,"connectionId":"<id>"}
//   {"action":"publish"|"send","id":..}    -> {"type":"ack","statusCode":200,"id":..} (nothing is forwarded)
//   POST /api/notify (Bearer API key) {"users":[..],"exclude_users":[..],"data":{..}}
//        users empty/absent = broadcast; `data` is serialized once and sent to every target
//   GET  /readyz, GET /api/users; server WebSocket pings every PING_INTERVAL_MS.
// TLS (wss/https), as sumu-node: --tls-listen ADDR with --tls-cert FILE (PEM full chain) and
// --tls-key FILE (PEM), or the env WS_NODE_TLS_LISTEN / WS_NODE_TLS_CERT / WS_NODE_TLS_KEY.
// Node's https server (OpenSSL), TLS 1.2 and 1.3, ALPN http/1.1; SIGHUP re-reads the pair
// (a bad pair is refused and the old one stays). The plain --listen keeps working beside it;
// both listeners serve the same routes and share one set of connections.
// Usage: node server.js --listen 127.0.0.1:PORT [--api-key dev] [--ping-interval-ms 30000]
//        [--tls-listen 127.0.0.1:PORT --tls-cert fullchain.pem --tls-key key.pem]
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const listen = arg('--listen', '127.0.0.1:8091');
const apiKey = arg('--api-key', 'dev');
const pingIntervalMs = Number(arg('--ping-interval-ms', '30000'));
const tlsListen = arg('--tls-listen', process.env.WS_NODE_TLS_LISTEN || '');
const tlsCert = arg('--tls-cert', process.env.WS_NODE_TLS_CERT || '');
const tlsKey = arg('--tls-key', process.env.WS_NODE_TLS_KEY || '');
if (tlsListen && (!tlsCert || !tlsKey)) {
  console.error('ws-node peer: --tls-listen needs --tls-cert FILE and --tls-key FILE');
  process.exit(2);
}

function hostPort(addr) {
  const sep = addr.lastIndexOf(':');
  return { host: addr.slice(0, sep), port: Number(addr.slice(sep + 1)) };
}

/** Reads the PEM pair; throws with the file name on a missing or unreadable file. */
function readPair() {
  const read = (what, file) => {
    try {
      return fs.readFileSync(file);
    } catch (e) {
      throw new Error(`${what} ${file}: ${e.message}`);
    }
  };
  return { cert: read('certificate', tlsCert), key: read('key', tlsKey) };
}

/** user id -> Set of sockets */
const byUser = new Map();
let nextId = 0;
let requests = 0;

function userFromToken(token) {
  if (!token) return null;
  token = token.replace(/^Bearer\s+/i, '');
  const parts = token.split('.');
  if (parts.length < 2) return null;
  try {
    const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    return typeof payload.sub === 'string' && payload.sub ? payload.sub : null;
  } catch (_) {
    return null;
  }
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function authorized(req) {
  const h = req.headers.authorization || '';
  return h.replace(/^Bearer\s+/i, '') === apiKey;
}

function deliver(users, exclude, frame) {
  const excluded = new Set(exclude);
  let delivered = 0;
  const sendTo = (ws) => {
    if (ws.readyState === 1) {
      ws.send(frame);
      delivered++;
    }
  };
  if (users.length === 0) {
    for (const [user, sockets] of byUser) {
      if (excluded.has(user)) continue;
      for (const ws of sockets) sendTo(ws);
    }
  } else {
    for (const user of new Set(users)) {
      if (excluded.has(user)) continue;
      const sockets = byUser.get(user);
      if (sockets) for (const ws of sockets) sendTo(ws);
    }
  }
  return delivered;
}

function onRequest(req, res) {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'GET' && (url.pathname === '/readyz' || url.pathname === '/healthz')) {
    return send(res, 200, { status: 'ok' });
  }
  if (req.method === 'GET' && url.pathname === '/api/users') {
    if (!authorized(req)) return send(res, 401, { error: 'bad api key' });
    return send(res, 200, [...byUser.keys()].sort());
  }
  if (req.method === 'POST' && url.pathname === '/api/notify') {
    if (!authorized(req)) return send(res, 401, { error: 'bad api key' });
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > 1 << 20) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (_) {
        return send(res, 400, { error: 'bad JSON' });
      }
      if (!body || typeof body !== 'object' || body.data === undefined) {
        return send(res, 400, { error: 'missing data' });
      }
      // Serialized once; ws sends the same string to every target.
      const frame = JSON.stringify(body.data);
      const users = Array.isArray(body.users) ? body.users : [];
      const exclude = Array.isArray(body.exclude_users) ? body.exclude_users : [];
      const deliveries = deliver(users, exclude, frame);
      return send(res, 202, { request_id: String(requests++), deliveries });
    });
    return;
  }
  send(res, 404, { error: 'not found' });
}

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });

function onUpgrade(req, socket, head) {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/push') {
    socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  const user = url.searchParams.get('user') ||
    userFromToken(url.searchParams.get('authorization')) ||
    userFromToken(req.headers.authorization);
  if (!user) {
    const body = '{"error":"no user"}';
    socket.end(`HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const id = String(nextId++);
    let sockets = byUser.get(user);
    if (!sockets) byUser.set(user, (sockets = new Set()));
    sockets.add(ws);
    ws.isAlive = true;
    ws.on('pong', () => { ws.isAlive = true; });
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let frame;
      try {
        frame = JSON.parse(data.toString('utf8'));
      } catch (_) {
        return ws.send('{"type":"error","statusCode":400,"message":"bad JSON"}');
      }
      const action = frame && frame.action;
      if (action === 'ping') {
        ws.send(`{"type":"pong","statusCode":200,"connectionId":"${id}"}`);
      } else if (action === 'publish' || action === 'send') {
        if (frame.message === undefined) {
          ws.send('{"type":"error","statusCode":400,"message":"missing message"}');
        } else if (frame.id !== undefined) {
          ws.send(JSON.stringify({ type: 'ack', statusCode: 200, id: frame.id }));
        }
      } else {
        ws.send('{"type":"error","statusCode":400,"message":"unknown action"}');
      }
    });
    ws.on('close', () => {
      sockets.delete(ws);
      if (sockets.size === 0 && byUser.get(user) === sockets) byUser.delete(user);
    });
    ws.on('error', () => {});
  });
}

// Liveness pings, like sumu's server pings.
setInterval(() => {
  for (const sockets of byUser.values()) {
    for (const ws of sockets) {
      if (!ws.isAlive) { ws.terminate(); continue; }
      ws.isAlive = false;
      ws.ping();
    }
  }
}, pingIntervalMs).unref();

const server = http.createServer(onRequest);
server.on('upgrade', onUpgrade);
const plain = hostPort(listen);
server.listen({ port: plain.port, host: plain.host, backlog: 8192 }, () => {
  console.error(`ws-node peer listening on ${plain.host}:${plain.port}`);
});

if (tlsListen) {
  let pair;
  try {
    pair = readPair();
  } catch (e) {
    console.error(`ws-node peer: cannot load TLS ${e.message}`);
    process.exit(2);
  }
  let tlsServer;
  try {
    tlsServer = https.createServer({
      ...pair,
      minVersion: 'TLSv1.2',
      ALPNProtocols: ['http/1.1'],
    }, onRequest);
  } catch (e) {
    console.error(`ws-node peer: bad TLS certificate or key: ${e.message}`);
    process.exit(2);
  }
  tlsServer.on('upgrade', onUpgrade);
  // A client that fails the handshake is logged at most once per second.
  let lastTlsError = 0;
  tlsServer.on('tlsClientError', (err) => {
    const now = Date.now();
    if (now - lastTlsError > 1000) {
      lastTlsError = now;
      console.error(`ws-node peer: TLS handshake failed: ${err.message}`);
    }
  });
  process.on('SIGHUP', () => {
    try {
      tlsServer.setSecureContext({ ...readPair(), minVersion: 'TLSv1.2' });
      console.error('ws-node peer: TLS certificate reloaded');
    } catch (e) {
      console.error(`ws-node peer: TLS reload refused, keeping the old certificate: ${e.message}`);
    }
  });
  const tls = hostPort(tlsListen);
  tlsServer.listen({ port: tls.port, host: tls.host, backlog: 8192 }, () => {
    console.error(`ws-node peer listening on ${tls.host}:${tls.port} (tls)`);
  });
}
