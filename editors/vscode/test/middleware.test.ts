import assert from 'node:assert/strict';
import { test } from 'node:test';
import { completionMiddleware } from '../src/middleware';

function setup(paused: boolean, menu = false) {
  const calls: unknown[][] = [];
  const next = (...args: unknown[]) => {
    calls.push(args);
    return { items: [{ insertText: 'return a + b' }] };
  };
  const mw = completionMiddleware({ isPaused: () => paused, completionMenu: () => menu });
  return { mw, calls, next: next as any };
}

const doc = { uri: 'file:///a.py' } as any;
const pos = { line: 1, character: 4 } as any;
const token = { isCancellationRequested: false } as any;

test('inline completion reaches the server while not paused, with the same arguments', () => {
  const { mw, calls, next } = setup(false);
  const ctx = { triggerKind: 1 } as any;
  const out = mw.provideInlineCompletionItems!(doc, pos, ctx, token, next);
  assert.deepEqual(out, { items: [{ insertText: 'return a + b' }] });
  assert.deepEqual(calls, [[doc, pos, ctx, token]]);
});

test('while paused no inline request is sent and there are no items', () => {
  const { mw, calls, next } = setup(true);
  assert.deepEqual(mw.provideInlineCompletionItems!(doc, pos, {} as any, token, next), []);
  assert.equal(calls.length, 0);
});

test('the completion menu is off unless codelsp.completionMenu, and off while paused', () => {
  let s = setup(false, false);
  assert.deepEqual(s.mw.provideCompletionItem!(doc, pos, {} as any, token, s.next), []);
  assert.equal(s.calls.length, 0);
  s = setup(false, true);
  s.mw.provideCompletionItem!(doc, pos, {} as any, token, s.next);
  assert.equal(s.calls.length, 1);
  s = setup(true, true);
  assert.deepEqual(s.mw.provideCompletionItem!(doc, pos, {} as any, token, s.next), []);
  assert.equal(s.calls.length, 0);
});

test('the gate is read at every request, so toggling takes effect at once', () => {
  let paused = false;
  let sent = 0;
  const mw = completionMiddleware({ isPaused: () => paused, completionMenu: () => false });
  const next = (() => { sent++; return []; }) as any;
  mw.provideInlineCompletionItems!(doc, pos, {} as any, token, next);
  paused = true;
  mw.provideInlineCompletionItems!(doc, pos, {} as any, token, next);
  paused = false;
  mw.provideInlineCompletionItems!(doc, pos, {} as any, token, next);
  assert.equal(sent, 2);
});
