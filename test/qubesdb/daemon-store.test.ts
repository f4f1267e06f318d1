// The daemon's pure parts against simple models: the sorted store (binary search, prefix
// queries, prefix removal) against a Map, and the watch registry against upstream's rule
// written out naively (a list of registrations compared with strncmp semantics).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SortedStore, WatchRegistry } from '@qubes-net/qubesdb';

const seg = fc.constantFrom('a', 'b', 'ab', 'qubes-ip', 'qubes-ip6', 'x.y', '1', '');
const path = fc.array(seg, { minLength: 1, maxLength: 4 }).map((s) => '/' + s.join('/'));
const key = path.filter((p) => !p.endsWith('/'));
const byteOrder = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

test('property: SortedStore behaves like a Map with sorted prefix scans', () => {
  const op = fc.oneof(
    fc.record({ op: fc.constant('set' as const), key, value: fc.string({ maxLength: 5 }) }),
    fc.record({ op: fc.constant('delete' as const), key }),
    fc.record({ op: fc.constant('deletePrefix' as const), key: path }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), fc.array(path, { maxLength: 5 }), (ops, queries) => {
      const store = new SortedStore();
      const model = new Map<string, string>();
      for (const o of ops) {
        if (o.op === 'set') {
          store.set(o.key, o.value);
          model.set(o.key, o.value);
        } else if (o.op === 'delete') {
          assert.equal(store.delete(o.key), model.delete(o.key));
        } else {
          let n = 0;
          for (const k of [...model.keys()]) if (k.startsWith(o.key)) (model.delete(k), n++);
          assert.equal(store.deletePrefix(o.key), n);
        }
        assert.equal(store.size, model.size);
      }
      const sorted = [...model.keys()].sort(byteOrder);
      for (const q of [...queries, '', '/']) {
        const got: [string, string][] = [];
        store.forEachWithPrefix(q, (p, v) => got.push([p, v]));
        assert.deepEqual(got, sorted.filter((k) => k.startsWith(q)).map((k) => [k, model.get(k)!]));
        assert.equal(store.get(q), model.get(q));
      }
      const desc: string[] = [];
      store.forEachDescending((p) => desc.push(p));
      assert.deepEqual(desc, [...sorted].reverse());
    }),
    { numRuns: 300 },
  );
});

test('store order is byte order (strcmp), not locale order', () => {
  const store = new SortedStore();
  for (const k of ['/b', '/B', '/a', '/_', '/-', '/.', '/a/b', '/a-b', '/@', '/:', '/0']) store.set(k, '');
  const got: string[] = [];
  store.forEachWithPrefix('', (p) => got.push(p));
  assert.deepEqual(got, ['/-', '/.', '/0', '/:', '/@', '/B', '/_', '/a', '/a-b', '/a/b', '/b']);
});

/** Upstream's matching, literally: strncmp with the NUL for exact watches, without for "X/". */
function upstreamMatches(watch: string, changed: string): boolean {
  const cmpLen = watch.endsWith('/') ? watch.length : watch.length + 1;
  return (watch + '\0').slice(0, cmpLen) === (changed + '\0').slice(0, cmpLen);
}

test('property: WatchRegistry fires once per matching registration, as upstream matches', () => {
  const client = fc.constantFrom('c1', 'c2', 'c3');
  const op = fc.oneof(
    fc.record({ op: fc.constant('add' as const), path, client }),
    fc.record({ op: fc.constant('remove' as const), path, client }),
    fc.record({ op: fc.constant('removeClient' as const), path: fc.constant(''), client }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 40 }), fc.array(path, { minLength: 1, maxLength: 6 }), (ops, changes) => {
      const reg = new WatchRegistry<string>();
      let model: { path: string; client: string }[] = [];
      for (const o of ops) {
        if (o.op === 'add') {
          reg.add(o.path, o.client);
          model.push({ path: o.path, client: o.client });
        } else if (o.op === 'remove') {
          const i = model.findIndex((w) => w.path === o.path && w.client === o.client);
          assert.equal(reg.remove(o.path, o.client), i !== -1);
          if (i !== -1) model.splice(i, 1);
        } else {
          reg.removeClient(o.client);
          model = model.filter((w) => w.client !== o.client);
        }
      }
      assert.equal(reg.size, model.length);
      for (const changed of changes) {
        const got: string[] = [];
        reg.forEachMatch(changed, (c) => got.push(c));
        const want = model.filter((w) => upstreamMatches(w.path, changed)).map((w) => w.client);
        assert.deepEqual(got.sort(), want.sort(), `change ${changed}`);
      }
    }),
    { numRuns: 300 },
  );
});
