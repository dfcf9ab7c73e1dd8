'use strict';
// hyco-ws echo listener.
//   node ws_listener.js <listenUri> <keyName> <key>
// listenUri is used verbatim, e.g. ws://127.0.0.1:PORT/$hc/echo?sb-hc-action=listen
// stdout: one JSON object per line (see README.md).

const WebSocket = require('hyco-ws');
const { installCrashReporter, makeErrorReporter, emit, errorEvent, errorMessage, exitAfterFlush, usage, tokenTtl } = require('./common');
installCrashReporter();

const [listenUri, keyName, key] = process.argv.slice(2);
if (!listenUri || !keyName || key === undefined) {
  usage('node ws_listener.js <listenUri> <keyName> <key>');
}

// createRelayToken itself rewrites the URI: scheme -> http, query dropped, "$hc/" removed
// (the port is kept). A function token makes hyco-ws also send hourly renewToken messages.
const tokenFn = () => WebSocket.createRelayToken(listenUri, keyName, key, tokenTtl());

// hyco-ws does not expose the accept notice to user code; peek at the control channel
// (before hyco-ws handles the message) to report connectHeaders / id / address.
const acceptsByAddress = new Map();
const hooked = new WeakSet();
function hookControlChannel(server) {
  const cc = server.controlChannel;
  if (!cc || hooked.has(cc)) return;
  hooked.add(cc);
  cc.prependListener('message', (data, flags) => {
    if (flags && flags.binary) return;
    try {
      const msg = JSON.parse(data);
      if (msg && msg.accept && msg.accept.address) {
        acceptsByAddress.set(msg.accept.address, msg.accept);
      }
    } catch (e) { /* hyco-ws itself will choke on this; nothing to add */ }
  });
}

let server;
try {
  server = WebSocket.createRelayedServer({ server: listenUri, token: tokenFn }, onConnection);
} catch (err) {
  emit(errorEvent(err));
  exitAfterFlush(1);
  return;
}

server.on('listening', () => {
  hookControlChannel(server);
  emit({ event: 'listening' });
});

const reportError = makeErrorReporter(() => {
  try { server.close(); } catch (e) { /* ignore */ }
  exitAfterFlush(1);
});
server.on('error', (err) => reportError(err));

function onConnection(ws) {
  const url = ws.url;
  const accept = acceptsByAddress.get(url);
  acceptsByAddress.delete(url);
  const ev = { event: 'connection', url: url, headers: accept ? accept.connectHeaders || {} : {} };
  if (accept && accept.id !== undefined) ev.id = accept.id;
  if (accept && accept.remoteEndpoint !== undefined) ev.remoteEndpoint = accept.remoteEndpoint;
  emit(ev);

  ws.on('message', (data, flags) => {
    const binary = !!(flags && flags.binary);
    if (!binary && data === '__close__') {
      ws.close(1000);
      return;
    }
    try {
      ws.send(data, { binary: binary }, (err) => {
        if (err) emit(errorEvent(err, { scope: 'connection', url: url }));
      });
    } catch (err) {
      emit(errorEvent(err, { scope: 'connection', url: url }));
    }
  });
  ws.on('close', (code, reason) => {
    emit({ event: 'connection_close', url: url, code: code, reason: reason == null ? '' : String(reason) });
  });
  ws.on('error', (err) => {
    emit(errorEvent(err, { scope: 'connection', url: url }));
  });
}

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
  // hyco-ws never emits 'close' if the control channel is still connecting/reconnecting.
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
