import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decorationText, nextEditParams, pickEdit } from '../src/nextEdit';

const range = { start: { line: 1, character: 17 }, end: { line: 1, character: 23 } };
const edit = { text: 'ratio', range, textDocument: { uri: 'file:///w/a.py', version: 3 } };

test('the request carries the uri, version and cursor as copilot.el sends them', () => {
  assert.deepEqual(nextEditParams('file:///w/a.py', 3, 0, 22), {
    textDocument: { uri: 'file:///w/a.py', version: 3 }, position: { line: 0, character: 22 },
  });
});

test('an edit for the version asked about is shown; another version, another document or none is not', () => {
  assert.deepEqual(pickEdit({ edits: [edit] }, 'file:///w/a.py', 3), edit);
  assert.equal(pickEdit({ edits: [edit] }, 'file:///w/a.py', 4), undefined);
  assert.equal(pickEdit({ edits: [edit] }, 'file:///w/b.py', 3), undefined);
  assert.equal(pickEdit({ edits: [] }, 'file:///w/a.py', 3), undefined);
  assert.equal(pickEdit(null, 'file:///w/a.py', 3), undefined);
});

test('the decoration shows the new text on one line', () => {
  assert.equal(decorationText(edit), ' → ratio');
  assert.equal(decorationText({ ...edit, text: 'a\nb' }), ' → a ⏎ b');
  assert.equal(decorationText({ ...edit, text: '' }), ' ⌫ (delete)');
});
