'use strict';
// Validates Kubernetes manifests against the Kubernetes OpenAPI schema (npm kubernetes-models, whose validators are
// compiled from it with @kubernetes-models/validate).
//
//   node validate-k8s.js FILE.yaml...
//
// Every YAML document of every file (parsed with the npm yaml package; empty documents are skipped) is validated by
// its apiVersion and kind. The schema's validators check types, enums and required fields but let unknown fields
// through (the schema has no additionalProperties: false); this script adds what `kubectl apply --validate=strict`
// does: a field the schema does not define is an error. It finds them by running the validator on a proxy of the
// document that records every property the validator reads: the compiled validator reads each property its schema
// defines (and enumerates maps such as labels), so a key it never read is not in the schema. An object whose
// schema defines no property at all (free-form, e.g. RawExtension) is read by no one and is left alone.
//
// Prints one line per document ("ok FILE#N Kind/name" or "invalid FILE#N Kind/name: why") and a last line
// RESULT {"documents":N,"invalid":N,"kinds":[...]}; exits 1 when a document is invalid, 2 on bad usage.
const fs = require('fs');
const path = require('path');
const YAML = require('yaml');

function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== 'string' || typeof kind !== 'string' || !/^[A-Za-z0-9]+$/.test(kind))
    throw new Error('apiVersion and kind must be strings');
  const parts = apiVersion.split('/');
  if (parts.length > 2 || parts.some((p) => !/^[a-z0-9.-]+$/.test(p))) throw new Error(`bad apiVersion ${apiVersion}`);
  const id = `kubernetes-models/${parts.join('/')}/${kind}`;
  let mod;
  try {
    mod = require(id);
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND' || e && e.code === 'ERR_PACKAGE_PATH_NOT_EXPORTED')
      throw new Error(`unknown apiVersion/kind ${apiVersion} ${kind} (no ${id})`);
    throw e;
  }
  const model = mod[kind];
  if (typeof model !== 'function' || typeof model.prototype.validate !== 'function')
    throw new Error(`unknown apiVersion/kind ${apiVersion} ${kind}`);
  return model;
}

const isObject = (v) => v !== null && typeof v === 'object';

// A proxy of value (recursively) that records, per object, the keys read and whether its keys were enumerated.
function tracked(value, reads) {
  const proxies = new WeakMap();
  const wrap = (target) => {
    if (!isObject(target)) return target;
    let p = proxies.get(target);
    if (p) return p;
    const info = { keys: new Set(), enumerated: false };
    reads.set(target, info);
    p = new Proxy(target, {
      get(t, key, receiver) {
        if (typeof key === 'string') info.keys.add(key);
        return wrap(Reflect.get(t, key, receiver));
      },
      has(t, key) {
        if (typeof key === 'string') info.keys.add(key);
        return Reflect.has(t, key);
      },
      getOwnPropertyDescriptor(t, key) {
        if (typeof key === 'string') info.keys.add(key);
        return Reflect.getOwnPropertyDescriptor(t, key);
      },
      ownKeys(t) {
        info.enumerated = true;
        return Reflect.ownKeys(t);
      },
    });
    proxies.set(target, p);
    return p;
  };
  return wrap(value);
}

// Paths of keys the validator never read, in objects it did read something of.
function unknownFields(value, reads, at, out) {
  if (Array.isArray(value)) {
    value.forEach((item, i) => unknownFields(item, reads, `${at}/${i}`, out));
    return out;
  }
  if (!isObject(value)) return out;
  const info = reads.get(value);
  const free = !info || (!info.enumerated && info.keys.size === 0);
  for (const key of Object.keys(value)) {
    if (!free && !info.enumerated && !info.keys.has(key)) {
      out.push(`${at}/${key}`);
      continue;
    }
    unknownFields(value[key], reads, `${at}/${key}`, out);
  }
  return out;
}

function validateDocument(obj) {
  if (!isObject(obj) || Array.isArray(obj)) throw new Error('a manifest must be a mapping');
  const model = modelFor(obj.apiVersion, obj.kind);
  const reads = new WeakMap();
  const errors = [];
  try {
    model.prototype.validate.call(tracked(obj, reads));
  } catch (e) {
    errors.push(e && e.message ? e.message : String(e));
  }
  const unknown = unknownFields(obj, reads, 'data', []);
  if (unknown.length > 0) errors.push(`unknown field${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}`);
  if (errors.length > 0) throw new Error(errors.join('; '));
}

function main(files) {
  if (files.length === 0) {
    console.error('usage: node validate-k8s.js FILE.yaml...');
    return 2;
  }
  let documents = 0;
  let invalid = 0;
  const kinds = [];
  for (const file of files) {
    const name = path.basename(file);
    let docs;
    try {
      docs = YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'), { merge: true, uniqueKeys: true });
    } catch (e) {
      console.log(`invalid ${name}: ${e.message}`);
      invalid++;
      continue;
    }
    if (!Array.isArray(docs)) docs = [docs]; // an empty stream
    docs.forEach((doc, i) => {
      const where = `${name}#${i + 1}`;
      const problems = doc.errors.concat(doc.warnings).map((e) => e.message.split('\n')[0]);
      if (problems.length > 0) {
        console.log(`invalid ${where}: YAML: ${problems.join('; ')}`);
        documents++;
        invalid++;
        return;
      }
      const obj = doc.toJS({ maxAliasCount: 100 });
      if (obj === null || obj === undefined) return; // an empty document (a trailing ---)
      documents++;
      const label = isObject(obj) ? `${obj.kind}/${obj.metadata && obj.metadata.name}` : '?';
      try {
        validateDocument(obj);
        kinds.push(obj.kind);
        console.log(`ok ${where} ${label}`);
      } catch (e) {
        invalid++;
        console.log(`invalid ${where} ${label}: ${e.message}`);
      }
    });
  }
  console.log('RESULT ' + JSON.stringify({ documents, invalid, kinds }));
  return invalid > 0 ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
