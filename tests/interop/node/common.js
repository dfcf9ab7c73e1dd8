'use strict';
// Shared helpers for the interop scripts: one JSON object per stdout line.

function emit(obj) {
  // stdout to a pipe/file is synchronous on Linux, so lines are flushed in order.
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function errorMessage(err) {
  if (err == null) return 'unknown error';
  if (typeof err === 'string') return err;
  if (err.message) return String(err.message);
  if (err.error && err.error.message) return String(err.error.message);
  try { return JSON.stringify(err); } catch (e) { return String(err); }
}

// A failed upgrade is reported as "unexpected server response (NNN)" by ws 1.x (hyco-ws)
// and "Unexpected server response: NNN" by ws 6.x (hyco-https).
function statusFromError(err) {
  const m = /unexpected server response:? \(?(\d{3})/i.exec(errorMessage(err));
  return m ? parseInt(m[1], 10) : undefined;
}

function errorEvent(err, extra) {
  const ev = Object.assign({ event: 'error', message: errorMessage(err) }, extra || {});
  const status = statusFromError(err);
  if (status !== undefined && ev.status === undefined) ev.status = status;
  return ev;
}

// Exit once stdout has drained (belt and braces for non-pipe stdouts).
function exitAfterFlush(code) {
  process.stdout.write('', () => process.exit(code));
  setTimeout(() => process.exit(code), 500).unref();
}

function usage(text) {
  process.stderr.write('usage: ' + text + '\n');
  process.exit(2);
}

// Optional token lifetime override (seconds) for expiry tests; default is the
// packages' own default (3600 s).
function tokenTtl() {
  const v = parseInt(process.env.HYCO_INTEROP_TOKEN_TTL || '', 10);
  return Number.isFinite(v) && v > 0 ? v : undefined;
}

// Control-channel errors can repeat thousands of times per second (hyco-ws reconnects
// without delay). Print each distinct message at most once per second; the next line
// for that message carries "suppressed": <count of lines skipped>.
// HYCO_INTEROP_EXIT_AFTER_ERRORS=N: after N control-channel errors print
// {"event":"exit","reason":"too many errors"} and exit 1 (default: never, like the SDK).
function makeErrorReporter(onFatal) {
  const last = new Map();
  const limit = parseInt(process.env.HYCO_INTEROP_EXIT_AFTER_ERRORS || '', 10);
  let total = 0;
  let fatal = false;
  return function report(err, extra) {
    if (fatal) return;
    total += 1;
    const ev = errorEvent(err, extra);
    const now = Date.now();
    const prev = last.get(ev.message);
    if (prev && now - prev.at < 1000) {
      prev.suppressed += 1;
    } else {
      if (prev && prev.suppressed) ev.suppressed = prev.suppressed;
      last.set(ev.message, { at: now, suppressed: 0 });
      emit(ev);
    }
    if (Number.isFinite(limit) && limit > 0 && total >= limit) {
      fatal = true;
      emit({ event: 'exit', reason: 'too many errors', errors: total });
      onFatal();
    }
  };
}

// The SDKs throw from inside socket callbacks on bad input (e.g. non-JSON on the control
// channel). Keep Node's behaviour (the process dies, exit 1) but say so on stdout too.
function installCrashReporter() {
  process.on('uncaughtException', (err) => {
    emit({ event: 'crash', message: errorMessage(err), stack: err && err.stack ? String(err.stack) : undefined });
    process.stderr.write((err && err.stack ? err.stack : String(err)) + '\n');
    process.exit(1);
  });
}

module.exports = { installCrashReporter, makeErrorReporter, emit, errorMessage, statusFromError, errorEvent, exitAfterFlush, usage, tokenTtl };
