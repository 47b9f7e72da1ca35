'use strict';
// Prints the YAML documents of a file as one JSON array (empty documents left out), for the C# tests to assert on.
//
//   node yaml-to-json.js FILE.yaml
//
// YAML errors (and duplicate keys) make it exit 1 with the message on stderr. Merge keys (<<) are resolved, as
// docker-compose does.
const fs = require('fs');
const YAML = require('yaml');

const file = process.argv[2];
if (!file || process.argv.length > 3) {
  console.error('usage: node yaml-to-json.js FILE.yaml');
  process.exit(2);
}
const docs = YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'), { merge: true, uniqueKeys: true });
const list = Array.isArray(docs) ? docs : [docs];
const problems = list.flatMap((d) => d.errors).map((e) => e.message);
if (problems.length > 0) {
  console.error(`${file}: ${problems.join('\n')}`);
  process.exit(1);
}
const values = list.map((d) => d.toJS({ maxAliasCount: 100 })).filter((v) => v !== null && v !== undefined);
process.stdout.write(JSON.stringify(values) + '\n');
