'use strict';
// CLIENTS pg clients run ITERATIONS rounds in lockstep (Promise.all per round, so their transactions interleave on
// the pool's few servers). Each round a client either runs four named queries, each its own transaction, or a
// BEGIN / two named queries / COMMIT block. Names: shared by every client with the same text ('add-one', 'concat',
// 'tx-a', 'tx-b'), per client with a shared text ('c<i>-mul'), and one name for a per-client text ('own').
// pg sends Parse once per name and connection, then only Bind/Describe/Execute/Sync by that name.

const { connect, endAll, expectEqual, intEnv, namedRow, run, simple } = require('./common');

const CLIENTS = intEnv('CLIENTS', 20);
const ITERATIONS = intEnv('ITERATIONS', 50);

const ADD_ONE = { name: 'add-one', text: 'select $1::int + 1 as n' };
const CONCAT = { name: 'concat', text: "select $1::text || '-' || $2::text as s" };
const MUL = 'select $1::int * 3 as n';
const TX_A = { name: 'tx-a', text: 'select $1::int * 2 as n, txid_current()::text as xid, pg_backend_pid() as pid' };
const TX_B = { name: 'tx-b', text: 'select $1::int - 1 as n, txid_current()::text as xid, pg_backend_pid() as pid' };
const ownText = (i) => `select $1::int + ${i} as n, ${i} as client, pg_backend_pid() as pid`;

async function step(state, it) {
  const { client, i, counters, pids } = state;
  const v = i * 1000 + it;
  const ctx = `client ${i} iteration ${it}`;
  if (it % 5 === 0) {
    await simple(client, 'BEGIN', ctx);
    const a = await namedRow(client, counters, TX_A.name, TX_A.text, [v], { n: 2 * v }, ctx, ['xid', 'pid']);
    const b = await namedRow(client, counters, TX_B.name, TX_B.text, [v], { n: v - 1 }, ctx, ['xid', 'pid']);
    // both named queries of the block ran in one transaction on one server
    expectEqual([b.xid, b.pid], [a.xid, a.pid], `${ctx}: transaction id and backend of tx-b vs tx-a`);
    await simple(client, 'COMMIT', ctx);
    pids.add(a.pid);
    state.transactions++;
  } else {
    await namedRow(client, counters, ADD_ONE.name, ADD_ONE.text, [v], { n: v + 1 }, ctx);
    const own = await namedRow(client, counters, 'own', ownText(i), [v], { n: v + i, client: i }, ctx, ['pid']);
    pids.add(own.pid);
    await namedRow(client, counters, `c${i}-mul`, MUL, [v], { n: 3 * v }, ctx);
    await namedRow(client, counters, CONCAT.name, CONCAT.text, [`c${i}`, String(it)], { s: `c${i}-${it}` }, ctx);
  }
}

run(async () => {
  const states = [];
  try {
    for (let i = 0; i < CLIENTS; i++) {
      states.push({ client: await connect(`node-load-${i}`), i, counters: { binds: 0, names: new Set() }, pids: new Set(), transactions: 0 });
    }
    for (let it = 0; it < ITERATIONS; it++) {
      await Promise.all(states.map((s) => step(s, it)));
    }
  } finally {
    await endAll(states.map((s) => s.client));
  }
  const allPids = new Set();
  states.forEach((s) => s.pids.forEach((p) => allPids.add(p)));
  return {
    clients: CLIENTS,
    iterations: ITERATIONS,
    namedExecutions: states.reduce((t, s) => t + s.counters.binds, 0),
    // pg parses a name once per connection: the Parse messages the pooler got from these clients
    clientParses: states.reduce((t, s) => t + s.counters.names.size, 0),
    // add-one, concat, the one multiply text, tx-a, tx-b, and one 'own' text per client
    distinctTexts: 5 + CLIENTS,
    transactions: states.reduce((t, s) => t + s.transactions, 0),
    backendPids: [...allPids].sort((a, b) => a - b),
    clientsOnSeveralServers: states.filter((s) => s.pids.size > 1).length,
  };
});
