'use strict';
// hyco-ws sender.
//   node ws_sender.js <sendUri> <keyName> <key>
// sendUri is used verbatim, e.g. ws://127.0.0.1:PORT/$hc/echo?sb-hc-action=connect
// stdin: JSON lines {"type":"text","data":"..."} | {"type":"binary","data":"<base64>"}
// stdout: one JSON object per line (see README.md).

const readline = require('readline');
const WebSocket = require('hyco-ws');
const { installCrashReporter, emit, errorEvent, errorMessage, exitAfterFlush, usage, tokenTtl } = require('./common');
installCrashReporter();

const [sendUri, keyName, key] = process.argv.slice(2);
if (!sendUri || !keyName || key === undefined) {
  usage('node ws_sender.js <sendUri> <keyName> <key>');
}

const token = WebSocket.createRelayToken(sendUri, keyName, key, tokenTtl());

let ws;
let opened = false;
let finished = false;
let hadError = false;
let stdinEnded = false;
let closing = false;
let sent = 0;
let received = 0;
const pending = [];   // parsed stdin messages not yet sent

function finish(code) {
  if (finished) return;
  finished = true;
  exitAfterFlush(code);
}

function maybeClose() {
  if (opened && !closing && stdinEnded && pending.length === 0 && received >= sent) {
    closing = true;
    ws.close(1000);
    // ws 1.x waits up to 30 s for the peer's close frame; don't hang the test longer than needed.
    setTimeout(() => {
      emit({ event: 'close', code: 1006, reason: 'close handshake timed out' });
      finish(1);
    }, 10000).unref();
  }
}

function flush() {
  if (!opened || closing) return;
  while (pending.length) {
    const m = pending.shift();
    sent += 1;
    ws.send(m.payload, { binary: m.binary }, (err) => {
      if (err) { hadError = true; emit(errorEvent(err)); }
    });
  }
  maybeClose();
}

try {
  ws = WebSocket.relayedConnect(sendUri, token, () => {
    opened = true;
    emit({ event: 'open' });
    flush();
  });
} catch (err) {
  emit(errorEvent(err));
  finish(1);
  return;
}

// Handshake answered with something other than 101: report status/reason/body and exit 1.
ws.on('unexpected-response', (req, res) => {
  hadError = true;
  const ev = { event: 'error', message: 'unexpected server response (' + res.statusCode + ')',
               status: res.statusCode, reason: res.statusMessage || '' };
  const chunks = [];
  let reported = false;
  const report = () => {
    if (reported) return;
    reported = true;
    const body = Buffer.concat(chunks).toString('utf8');
    if (body) ev.body = body;
    emit(ev);
    try { req.abort(); } catch (e) { /* ignore */ }
    finish(1);
  };
  res.on('data', (c) => chunks.push(c));
  res.on('end', report);
  res.on('error', report);
  setTimeout(report, 1000).unref();
});

ws.on('error', (err) => {
  hadError = true;
  emit(errorEvent(err));
  if (!opened) finish(1);
});

ws.on('message', (data, flags) => {
  received += 1;
  if (flags && flags.binary) {
    emit({ event: 'message', type: 'binary', data: Buffer.from(data).toString('base64') });
  } else {
    emit({ event: 'message', type: 'text', data: String(data) });
  }
  maybeClose();
});

ws.on('close', (code, reason) => {
  if (finished) return;
  if (!opened) {
    // connect failure: the error/unexpected-response handler reports it
    setTimeout(() => {
      if (!finished) { emit({ event: 'error', message: 'connection closed before open', code: code }); finish(1); }
    }, 1100).unref();
    return;
  }
  emit({ event: 'close', code: code, reason: reason == null ? '' : String(reason) });
  finish(hadError ? 1 : 0);
});

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let m;
  try {
    m = JSON.parse(line);
  } catch (err) {
    emit({ event: 'error', message: 'bad stdin line: ' + errorMessage(err) });
    return;
  }
  if (m.type === 'binary') {
    pending.push({ binary: true, payload: Buffer.from(m.data || '', 'base64') });
  } else if (m.type === 'text') {
    pending.push({ binary: false, payload: String(m.data == null ? '' : m.data) });
  } else {
    emit({ event: 'error', message: 'bad stdin message type: ' + JSON.stringify(m.type) });
    return;
  }
  flush();
});
rl.on('close', () => {
  stdinEnded = true;
  flush();
  maybeClose();
});

function stop() {
  if (opened && !closing) {
    closing = true;
    try { ws.close(1000); } catch (e) { /* ignore */ }
    setTimeout(() => finish(hadError ? 1 : 0), 2000).unref();
  } else {
    finish(opened ? 0 : 1);
  }
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
