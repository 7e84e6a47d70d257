import assert from 'node:assert/strict';
import { test } from 'node:test';
import { contextParams, identifiersNear, snippetsFor, CONTEXT_NOTIFICATION, MAX_IDENTIFIERS } from '../src/context';

test('the identifiers before the cursor and on the lines above, nearest first, keywords out', () => {
  const lines = ['import os', 'def run(box):', '    total = helper(box.size)', '    return Box(total'];
  const found = identifiersNear(lines, 3, 20);
  assert.deepEqual(found.map((s) => s.name), ['total', 'Box', 'size', 'box', 'helper', 'run', 'os']);
  assert.deepEqual(found[1], { line: 3, character: 11, name: 'Box' }); // inside the name, as VS Code needs
  assert.ok(!found.some((s) => s.name === 'return' || s.name === 'def'));
  const many = [Array.from({ length: 20 }, (_, i) => `name${i}`).join(' ')];
  assert.equal(identifiersNear(many, 0, 10_000).length, MAX_IDENTIFIERS);
});

test('snippets come from other files, twelve lines from each definition, each place once', () => {
  const util = ['', 'def helper(a, b):', '    return a + b', ...Array.from({ length: 20 }, () => '    pass')];
  const read = (u: string) => (u === 'file:///w/util.py' ? util : undefined);
  const defs = [
    { uri: 'file:///w/util.py', line: 1 }, { uri: 'file:///w/util.py', line: 1 },
    { uri: 'file:///w/main.py', line: 0 }, { uri: 'file:///w/gone.py', line: 0 },
  ];
  const snippets = snippetsFor(defs, 'file:///w/main.py', read);
  assert.equal(snippets.length, 1);
  assert.equal(snippets[0].path, 'file:///w/util.py');
  assert.equal(snippets[0].text.split('\n').length, 13); // 12 lines and the final line break
  assert.ok(snippets[0].text.startsWith('def helper(a, b):\n'));
});

test('the same snippets are not sent twice for a document', () => {
  const sent = new Map<string, string>();
  const s = [{ path: 'file:///w/util.py', text: 'def helper():\n' }];
  assert.equal(CONTEXT_NOTIFICATION, 'codelsp/context');
  assert.deepEqual(contextParams('file:///w/a.py', s, sent), { textDocument: { uri: 'file:///w/a.py' }, snippets: s });
  assert.equal(contextParams('file:///w/a.py', s, sent), undefined);
  assert.ok(contextParams('file:///w/b.py', s, sent));
  assert.ok(contextParams('file:///w/a.py', [], sent));
});
