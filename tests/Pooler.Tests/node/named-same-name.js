'use strict';
// Statement names belong to each client, as in PostgreSQL: CLIENTS pg clients all use the name 'q', with one of
// VARIANTS different texts (so some clients share name and text, others only the name), and the names 'x'/'y'
// swapped between even and odd clients. ITERATIONS rounds in lockstep (Promise.all), every third one inside
// BEGIN/COMMIT; every answer must come from the client's own statement (value and column names).

const { intEnv, lockstep, namedRow, run, simple } = require('./common');

const CLIENTS = intEnv('CLIENTS', 8);
const ITERATIONS = intEnv('ITERATIONS', 30);

const VARIANTS = [
  { text: 'select $1::int + 100 as v', expect: (x) => ({ v: x + 100 }) },
  { text: "select 'b:' || $1::text as v", expect: (x) => ({ v: `b:${x}` }) },
  { text: 'select $1::int * -1 as v, 2 as variant', expect: (x) => ({ v: -x, variant: 2 }) },
  { text: 'select ($1::int % 7)::text as rest, true as yes', expect: (x) => ({ rest: String(x % 7), yes: true }) },
];
const PLUS = { text: 'select $1::int + 1 as plus', expect: (x) => ({ plus: x + 1 }) };
const MINUS = { text: 'select $1::int - 1 as minus', expect: (x) => ({ minus: x - 1 }) };

async function step(state, it) {
  const { client, i, counters } = state;
  const x = i * 1000 + it;
  const ctx = `client ${i} iteration ${it}`;
  const q = VARIANTS[i % VARIANTS.length];
  const [forX, forY] = i % 2 === 0 ? [PLUS, MINUS] : [MINUS, PLUS];
  const runQ = () => namedRow(client, counters, 'q', q.text, [x], q.expect(x), ctx);
  const runX = () => namedRow(client, counters, 'x', forX.text, [x], forX.expect(x), ctx);
  const runY = () => namedRow(client, counters, 'y', forY.text, [x], forY.expect(x), ctx);
  if (it % 3 === 2) {
    await simple(client, 'BEGIN', ctx);
    await runX();
    await runQ();
    await runY();
    await simple(client, 'COMMIT', ctx);
  } else if (i % 2 === 0) {
    await runQ();
    await runX();
    await runY();
  } else {
    await runY();
    await runX();
    await runQ();
  }
}

run(async () => {
  const counts = await lockstep('node-same-name', CLIENTS, ITERATIONS, step);
  return {
    clients: CLIENTS,
    iterations: ITERATIONS,
    ...counts,
    variantsUsed: Math.min(CLIENTS, VARIANTS.length),
  };
});
