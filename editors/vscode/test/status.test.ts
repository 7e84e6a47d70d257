import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseStatus, statusView, stderrLevel } from '../src/status';

test('codelsp/status notifications become the model state', () => {
  assert.deepEqual(parseStatus({ state: 'loading', message: 'loading cl.gguf' }), { kind: 'loading', message: 'loading cl.gguf' });
  assert.deepEqual(parseStatus({ state: 'ready', message: 'cl.gguf ready' }), { kind: 'ready', message: 'cl.gguf ready' });
  assert.deepEqual(parseStatus({ state: 'error', message: 'bad file' }), { kind: 'error', message: 'bad file' });
  assert.deepEqual(parseStatus({ state: 'loading', percentage: 140.2 }), { kind: 'loading', message: '', percentage: 100 });
  assert.equal(parseStatus({ state: 'asleep' }), undefined);
  assert.equal(parseStatus('ready'), undefined);
  assert.equal(parseStatus(null), undefined);
  assert.equal(statusView({ kind: 'loading', message: '', percentage: 40 }, false).text, '$(sync~spin) codelsp 40%');
});

test('the status bar text and tooltip per state', () => {
  assert.equal(statusView({ kind: 'ready', message: 'cl.gguf ready' }, false).text, '$(check) codelsp');
  assert.match(statusView({ kind: 'ready', message: 'cl.gguf ready' }, false).tooltip, /model ready\n\ncl\.gguf ready/);
  const err = statusView({ kind: 'error', message: 'bad' }, false);
  assert.equal(err.text, '$(error) codelsp');
  assert.equal(err.background, 'statusBarItem.errorBackground');
  assert.match(statusView({ kind: 'notFound', message: 'x' }, false).tooltip, /server not found/);
  assert.equal(statusView({ kind: 'stopped', message: '' }, false).background, 'statusBarItem.warningBackground');
});

test('paused shows a pause icon and says so', () => {
  const v = statusView({ kind: 'ready', message: '' }, true);
  assert.equal(v.text, '$(debug-pause) codelsp');
  assert.match(v.tooltip, /paused/);
  assert.equal(v.label, 'codelsp: model ready; completions paused');
  assert.equal(statusView({ kind: 'ready', message: 'cl.gguf ready' }, false).label, 'codelsp: model ready; cl.gguf ready');
  assert.equal(v.background, 'statusBarItem.warningBackground');
  assert.equal(statusView({ kind: 'error', message: '' }, true).background, 'statusBarItem.errorBackground');
});

test('server stderr lines keep codelsp levels; llama.cpp chatter is not shown as errors', () => {
  assert.equal(stderrLevel('codelsp ERROR model.gguf: not a GGUF file'), 'error');
  assert.equal(stderrLevel('codelsp WARNING initializationOptions: unknown setting'), 'warn');
  assert.equal(stderrLevel('codelsp INFO loaded model.gguf'), 'trace');
  assert.equal(stderrLevel('codelsp DEBUG 3 tokens reused'), 'trace');
  assert.equal(stderrLevel('load: special tokens cache size = 17'), 'info');
  assert.equal(stderrLevel('Traceback (most recent call last):'), 'info');
});
