'use strict';
// Errors with named queries: CLIENTS pg clients run ROUNDS rounds of the sequence below at the same time
// (Promise.all per round), each checking every answer. After each error the client must go on with named
// queries; a name whose Parse failed must be usable again with correct text (PostgreSQL created nothing).
//
//  1. 'good' ok                             6. BEGIN; 'good' ok; 'txbad-<r>' syntax error (42601);
//  2. 'bad-<r>' invalid SQL -> 42601           'good' -> 25P02 (transaction aborted); ROLLBACK
//  3. 'good', 'other' ok                     7. 'txbad-<r>' with correct text ok
//  4. 'bad-<r>' with correct text ok        8. 'div' 10/0 -> 22012 (Parse succeeded); 'div' 10/2 ok
//  5. 'bad-<r>' again (Bind only) ok        9. BEGIN; 'div' ok; 'good' ok; COMMIT

const { connect, endAll, intEnv, namedError, namedRow, run, simple } = require('./common');

const CLIENTS = intEnv('CLIENTS', 4);
const ROUNDS = intEnv('ROUNDS', 8);

const GOOD = 'select $1::int + 1 as n';
const OTHER = 'select $1::text as t';
const DIV = 'select 10 / $1::int as n';

async function round(state, r) {
  const { client, i, counters, errors } = state;
  const v = i * 100 + r;
  const ctx = `client ${i} round ${r}`;
  const expectError = async (name, text, values, code, step) => {
    const e = await namedError(client, name, text, values, code, `${ctx} step ${step}`);
    errors[code] = (errors[code] || 0) + 1;
    return e;
  };

  await namedRow(client, counters, 'good', GOOD, [v], { n: v + 1 }, `${ctx} step 1`);

  const syntax = await expectError(`bad-${r}`, 'selec $1::int', [v], '42601', 2);
  if (!/^syntax error at or near "selec"/.test(syntax.message)) throw new Error(`${ctx} step 2: unexpected message '${syntax.message}'`);

  await namedRow(client, counters, 'good', GOOD, [v + 1], { n: v + 2 }, `${ctx} step 3`);
  await namedRow(client, counters, 'other', OTHER, [`x${v}`], { t: `x${v}` }, `${ctx} step 3`);

  await namedRow(client, counters, `bad-${r}`, 'select $1::int * 10 as n', [v], { n: v * 10 }, `${ctx} step 4`);
  await namedRow(client, counters, `bad-${r}`, 'select $1::int * 10 as n', [v + 1], { n: (v + 1) * 10 }, `${ctx} step 5`);

  await simple(client, 'BEGIN', `${ctx} step 6`);
  await namedRow(client, counters, 'good', GOOD, [v], { n: v + 1 }, `${ctx} step 6`);
  await expectError(`txbad-${r}`, 'select $1::int frm nowhere', [v], '42601', 6);
  await expectError('good', GOOD, [v], '25P02', 6);
  await simple(client, 'ROLLBACK', `${ctx} step 6`);

  await namedRow(client, counters, `txbad-${r}`, 'select $1::int - 1 as n', [v], { n: v - 1 }, `${ctx} step 7`);

  await expectError('div', DIV, [0], '22012', 8);
  await namedRow(client, counters, 'div', DIV, [2], { n: 5 }, `${ctx} step 8`);

  await simple(client, 'BEGIN', `${ctx} step 9`);
  await namedRow(client, counters, 'div', DIV, [5], { n: 2 }, `${ctx} step 9`);
  await namedRow(client, counters, 'good', GOOD, [v], { n: v + 1 }, `${ctx} step 9`);
  await simple(client, 'COMMIT', `${ctx} step 9`);
  state.rounds++;
}

run(async () => {
  const states = [];
  try {
    for (let i = 0; i < CLIENTS; i++) {
      states.push({ client: await connect(`node-errors-${i}`), i, counters: { binds: 0 }, errors: {}, rounds: 0 });
    }
    for (let r = 0; r < ROUNDS; r++) {
      await Promise.all(states.map((s) => round(s, r)));
    }
  } finally {
    await endAll(states.map((s) => s.client));
  }
  const errors = {};
  for (const s of states) for (const [code, n] of Object.entries(s.errors)) errors[code] = (errors[code] || 0) + n;
  return {
    clients: CLIENTS,
    rounds: ROUNDS,
    completedRounds: states.reduce((t, s) => t + s.rounds, 0),
    namedExecutions: states.reduce((t, s) => t + s.counters.binds, 0),
    errors,
  };
});
