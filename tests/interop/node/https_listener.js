'use strict';
// hyco-https test listener.
//   node https_listener.js <namespaceHostPort> <path> <keyName> <key> [http|https]
// Dials ws://<namespaceHostPort>/$hc/<path>?sb-hc-action=listen ("http") or wss://... ("https",
// the default). hyco-https's own createRelayListenUri always yields wss://NS:443/..., so the
// URI is built here and passed as the `server` option, which hyco-https uses verbatim.
// stdout: one JSON object per line (see README.md).

const https = require('hyco-https');
const { installCrashReporter, makeErrorReporter, emit, errorEvent, errorMessage, exitAfterFlush, usage, tokenTtl } = require('./common');
installCrashReporter();

const [nsHostPort, hcPath, keyName, key, schemeArg] = process.argv.slice(2);
const scheme = (schemeArg || 'https').toLowerCase();
if (!nsHostPort || !hcPath || !keyName || key === undefined || (scheme !== 'http' && scheme !== 'https')) {
  usage('node https_listener.js <namespaceHostPort> <path> <keyName> <key> [http|https]');
}

const path = hcPath.replace(/^\/+/, '');
const listenUri = (scheme === 'https' ? 'wss' : 'ws') + '://' + nsHostPort + '/$hc/' + path + '?sb-hc-action=listen';
const tokenFn = () => https.createRelayToken(listenUri, keyName, key, tokenTtl());

const GREETING = 'hello from hyco-https';

function patternBody(n) {
  const buf = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) buf[i] = i % 251;
  return buf;
}

function send(res, status, reason, headers, body) {
  if (reason) res.writeHead(status, reason, headers);
  else res.writeHead(status, headers);
  // hyco-https: res.end(<empty Buffer>) sends nothing at all; res.end() sends the empty body.
  if (body && body.length) res.end(body);
  else res.end();
}

function route(req, res, body) {
  const u = new URL(req.url || '/', 'http://placeholder');
  const p = u.pathname.replace(/\/+$/, '');
  const method = (req.method || '').toUpperCase();
  let m;
  if (method === 'GET' && /\/small$/.test(p)) {
    return send(res, 200, null, { 'content-type': 'text/plain; charset=utf-8' }, Buffer.from(GREETING, 'utf8'));
  }
  if (method === 'POST' && /\/echo$/.test(p)) {
    return send(res, 200, null, { 'content-type': 'application/octet-stream' }, body);
  }
  if (method === 'GET' && /\/big$/.test(p)) {
    const n = parseInt(u.searchParams.get('size') || '0', 10);
    if (!Number.isFinite(n) || n < 0) {
      return send(res, 400, null, { 'content-type': 'text/plain' }, Buffer.from('bad size'));
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    // Write in 64 KiB pieces like a piped stream would; >64 KiB total makes hyco-https
    // switch the response to a rendezvous WebSocket.
    const data = patternBody(n);
    const CHUNK = 64 * 1024;
    for (let off = 0; off < data.length; off += CHUNK) res.write(data.subarray(off, off + CHUNK));
    res.end();
    return;
  }
  if ((m = /\/status\/(\d{3})$/.exec(p))) {
    return send(res, parseInt(m[1], 10), 'Custom Reason', { 'content-type': 'text/plain' }, null);
  }
  return send(res, 404, null, { 'content-type': 'text/plain' }, Buffer.from('not found'));
}

let server;
try {
  server = https.createRelayedServer({ server: listenUri, token: tokenFn }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c)));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      emit({ event: 'request', method: req.method, url: req.url, headers: req.headers, bodyLength: body.length });
      try {
        route(req, res, body);
      } catch (err) {
        emit(errorEvent(err, { scope: 'request', url: req.url }));
        try { send(res, 500, null, {}, null); } catch (e) { /* ignore */ }
      }
    });
  });
} catch (err) {
  emit(errorEvent(err));
  exitAfterFlush(1);
  return;
}

server.on('listening', () => emit({ event: 'listening' }));
const reportError = makeErrorReporter(() => {
  try { server.close(); } catch (e) { /* ignore */ }
  exitAfterFlush(1);
});
server.on('error', (err) => reportError(err));
server.listen();

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  let finished = false;
  const done = () => {
    if (finished) return;
    finished = true;
    emit({ event: 'closed' });
    exitAfterFlush(0);
  };
  server.once('close', done);
  setTimeout(done, 2000).unref();
  try {
    server.close();
  } catch (err) {
    emit({ event: 'error', message: errorMessage(err) });
    done();
  }
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
