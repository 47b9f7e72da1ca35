'use strict';
// More statement texts than a server may keep (the test sets max-prepared-statements below TEXTS): CLIENTS pg
// clients cycle through TEXTS named queries 'q0'..'q<TEXTS-1>' in lockstep rounds, every fourth round running
// WIDE of them inside one BEGIN/COMMIT. Servers must evict and prepare again; every answer must stay right.

const { intEnv, lockstep, namedRow, run, simple } = require('./common');

const CLIENTS = intEnv('CLIENTS', 10);
const ITERATIONS = intEnv('ITERATIONS', 40);
const TEXTS = intEnv('TEXTS', 8);
const WIDE = intEnv('WIDE', 6);

const text = (k) => `select $1::int + ${k} as n, ${k} as k`;

async function step(state, it) {
  const { client, i, counters } = state;
  const x = i * 1000 + it;
  const ctx = `client ${i} iteration ${it}`;
  const q = (k) => namedRow(client, counters, `q${k}`, text(k), [x], { n: x + k, k }, ctx);
  if (it % 4 === 3) {
    await simple(client, 'BEGIN', ctx);
    for (let j = 0; j < WIDE; j++) await q((i + j) % TEXTS);
    await simple(client, 'COMMIT', ctx);
  } else {
    const k = (i + it) % TEXTS;
    await q(k);
    await q((k + 3) % TEXTS);
  }
}

run(async () => {
  const counts = await lockstep('node-evict', CLIENTS, ITERATIONS, step);
  return {
    clients: CLIENTS,
    iterations: ITERATIONS,
    texts: TEXTS,
    ...counts,
  };
});
