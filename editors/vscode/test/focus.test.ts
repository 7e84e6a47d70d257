import assert from 'node:assert/strict';
import { test } from 'node:test';
import { focusParams, FOCUS_NOTIFICATION } from '../src/focus';

function editor(scheme: string, path: string, line: number, character: number) {
  return { document: { uri: { scheme, path } }, selection: { active: { line, character } } };
}
const asUri = (u: { scheme: string; path?: string }) => `${u.scheme}://${u.path}`;

test('the editor in front is sent with its cursor, its URI converted as the client does', () => {
  assert.equal(FOCUS_NOTIFICATION, 'codelsp/didFocus');
  assert.deepEqual(focusParams(editor('file', '/w/a.py', 8, 4), false, asUri), {
    textDocument: { uri: 'file:///w/a.py' },
    position: { line: 8, character: 4 },
  });
  assert.deepEqual(focusParams(editor('untitled', 'Untitled-1', 0, 0), false, asUri)?.textDocument, {
    uri: 'untitled://Untitled-1',
  });
});

test('nothing is sent for no editor, an output panel, or while completions are paused', () => {
  assert.equal(focusParams(undefined, false, asUri), undefined);
  assert.equal(focusParams(editor('output', 'extension-output-codelsp', 3, 0), false, asUri), undefined);
  assert.equal(focusParams(editor('file', '/w/a.py', 8, 4), true, asUri), undefined);
});
