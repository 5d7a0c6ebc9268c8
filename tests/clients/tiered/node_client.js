'use strict';
// Reads of a tiered table with node-postgres: statements without parameters
// go as simple queries, those with one as unnamed extended-protocol
// statements, and a named statement is run several times. Prints every
// value as node-pg decoded it; see python_client.py.

const fs = require('fs');
const path = require('path');
const pg = require('pg');

const PARAMS = [null, 97, new Date(Date.UTC(2025, 5, 1)), null, 15, 7];

function show(v) {
  if (v === null) return 'null';
  if (v instanceof Date) return `Date:${v.toISOString()}`;
  return `${typeof v}:${String(v)}`;
}

async function main() {
  const queries = fs.readFileSync(path.join(__dirname, 'queries.txt'), 'utf8')
    .split('\n').map((l) => l.trim()).filter((l) => l);
  const client = new pg.Client();
  await client.connect();
  try {
    for (let i = 0; i < queries.length; i++) {
      process.stdout.write(`> ${queries[i]}\n`);
      const res = await client.query(queries[i], PARAMS[i] === null ? undefined : [PARAMS[i]]);
      process.stdout.write(`  ${res.command} ${res.rowCount}; columns: ${res.fields.map((f) => f.name).join(', ')}\n`);
      for (const row of res.rows) {
        process.stdout.write('  ' + Object.keys(row).map((k) => show(row[k])).join(' | ') + '\n');
      }
    }
    process.stdout.write('=== a named statement run 3 times\n');
    for (let n = 0; n < 3; n++) {
      const res = await client.query({ name: 'by_id', text: queries[1], values: [101 + n] });
      process.stdout.write(`  run ${n + 1}: ${res.rowCount} rows\n`);
    }
  } finally {
    await client.end();
  }
}

main().catch((e) => {
  process.stdout.write(`error ${e.code || ''}: ${e.message}\n`);
  process.exitCode = 1;
});
