'use strict';
// Shared by the scripts Pooler.Tests runs (Infrastructure/NodePg.cs): connection settings from the environment,
// value checks that fail with context, a watchdog, and the one-line JSON summary the C# test parses.
//
// Environment: PGHOST, PGPORT, PGUSER, PGPASSWORD (may be empty), PGDATABASE; NODE_PG_TIMEOUT_MS bounds the
// whole script (default 120000). A script prints "RESULT {json}" as its last stdout line and exits 0, or prints
// "FAIL: ..." on stderr and exits 1 (2 when the watchdog fires).

const { Client } = require('pg');

function env(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (fallback !== undefined) return fallback;
    throw new Error(`environment variable ${name} is not set`);
  }
  return v;
}

function intEnv(name, fallback) {
  const v = Number(env(name, String(fallback)));
  if (!Number.isInteger(v) || v < 0) throw new Error(`environment variable ${name} is not a non-negative integer: ${process.env[name]}`);
  return v;
}

/** A connected pg.Client through the pooler; every query is bounded by query_timeout. */
async function connect(applicationName) {
  const client = new Client({
    host: env('PGHOST'),
    port: Number(env('PGPORT')),
    user: env('PGUSER'),
    password: process.env.PGPASSWORD || undefined,
    database: env('PGDATABASE'),
    application_name: applicationName,
    connectionTimeoutMillis: 30000,
    query_timeout: 30000,
    ssl: false,
  });
  // An error on an idle connection (the pooler closing it) would otherwise crash the process without context.
  client.on('error', (e) => fail(`connection ${applicationName} failed: ${describe(e)}`));
  await client.connect();
  return client;
}

function describe(e) {
  if (!e) return String(e);
  const fields = ['code', 'severity', 'position', 'detail', 'hint', 'where']
    .filter((k) => e[k] !== undefined)
    .map((k) => `${k}=${e[k]}`);
  return `${e.message}${fields.length ? ' [' + fields.join(' ') + ']' : ''}`;
}

/** Throws with the context when actual !== expected (strict, after JSON round trip for objects). */
function expectEqual(actual, expected, context) {
  const a = JSON.stringify(actual);
  const b = JSON.stringify(expected);
  if (a !== b) throw new Error(`${context}: expected ${b}, got ${a}`);
}

/**
 * Runs a named query and checks it returns exactly one row equal to expectedRow (the columns listed in ignore are
 * taken out first and returned). counters.binds counts executions, counters.names (a Set, optional) the names used.
 */
async function namedRow(client, counters, name, text, values, expectedRow, context, ignore = []) {
  let res;
  try {
    res = await client.query({ name, text, values });
  } catch (e) {
    throw new Error(`${context}: named query '${name}' (${text}) with ${JSON.stringify(values)} failed: ${describe(e)}`);
  }
  counters.binds++;
  if (counters.names) counters.names.add(name);
  if (res.rows.length !== 1) throw new Error(`${context}: named query '${name}' returned ${res.rows.length} rows: ${JSON.stringify(res.rows)}`);
  const row = { ...res.rows[0] };
  const extra = {};
  for (const k of ignore) { extra[k] = row[k]; delete row[k]; }
  expectEqual(row, expectedRow, `${context}: named query '${name}' (${text}) with ${JSON.stringify(values)}`);
  return extra;
}

/** Runs a named query that must fail with SQLSTATE code; returns the error. */
async function namedError(client, name, text, values, code, context) {
  let res;
  try {
    res = await client.query({ name, text, values });
  } catch (e) {
    if (e.code !== code) throw new Error(`${context}: named query '${name}' (${text}) should fail with ${code}, failed with ${describe(e)}`);
    return e;
  }
  throw new Error(`${context}: named query '${name}' (${text}) should fail with ${code}, returned ${JSON.stringify(res.rows)}`);
}

async function simple(client, sql, context) {
  try {
    return await client.query(sql);
  } catch (e) {
    throw new Error(`${context}: '${sql}' failed: ${describe(e)}`);
  }
}

let finished = false;

function fail(message) {
  if (finished) return;
  finished = true;
  console.error('FAIL: ' + message);
  process.exit(1);
}

/** Runs main() under a watchdog; prints "RESULT <json>" with what main returns. */
function run(main) {
  const timeoutMs = intEnv('NODE_PG_TIMEOUT_MS', 120000);
  const watchdog = setTimeout(() => {
    if (finished) return;
    finished = true;
    console.error(`FAIL: watchdog: the script did not finish within ${timeoutMs} ms`);
    process.exit(2);
  }, timeoutMs);
  watchdog.unref();
  const started = Date.now();
  Promise.resolve()
    .then(main)
    .then((summary) => {
      if (finished) return;
      finished = true;
      console.log('RESULT ' + JSON.stringify({ ...summary, elapsedMs: Date.now() - started }));
      process.exit(0);
    })
    .catch((e) => fail(e && e.stack ? e.stack : describe(e)));
}

/** Closes clients, bounded: a hung end() must not keep the script alive. */
async function endAll(clients) {
  await Promise.race([
    Promise.all(clients.map((c) => c.end().catch(() => {}))),
    new Promise((resolve) => setTimeout(resolve, 10000).unref()),
  ]);
}

/**
 * Opens `clients` connections (application_name prefix-i), runs `step(state, iteration)` for every client at once,
 * `iterations` times, closes them all; returns the named executions and client Parses the states counted.
 */
async function lockstep(prefix, clients, iterations, step) {
  const states = [];
  try {
    for (let i = 0; i < clients; i++) {
      states.push({ client: await connect(`${prefix}-${i}`), i, counters: { binds: 0, names: new Set() } });
    }
    for (let it = 0; it < iterations; it++) {
      await Promise.all(states.map((s) => step(s, it)));
    }
  } finally {
    await endAll(states.map((s) => s.client));
  }
  return {
    namedExecutions: states.reduce((t, s) => t + s.counters.binds, 0),
    clientParses: states.reduce((t, s) => t + s.counters.names.size, 0),
  };
}

module.exports = { connect, describe, endAll, env, expectEqual, fail, intEnv, lockstep, namedError, namedRow, run, simple };
