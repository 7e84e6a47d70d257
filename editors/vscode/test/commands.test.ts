import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import {
  COMMANDS, explainParams, explanationHtml, markdownAsPre, parseExplainResult, parseWriteResult,
  registerCommands, SERVER_COMMANDS, writeFunctionParams, type Handlers,
} from '../src/commands';
import { EXT_ROOT, packageJson } from './helpers';

function handlers(log: string[]): Handlers {
  const h = {} as Handlers;
  for (const name of Object.keys(COMMANDS) as (keyof typeof COMMANDS)[]) {
    h[name] = () => log.push(name);
  }
  return h;
}

test('every contributed command is registered, each with its own handler', () => {
  const registered = new Map<string, (...a: unknown[]) => unknown>();
  const log: string[] = [];
  const disposables = registerCommands((id, fn) => {
    assert.ok(!registered.has(id), `${id} registered twice`);
    registered.set(id, fn);
    return { dispose: () => registered.delete(id) };
  }, handlers(log));
  const contributed = packageJson().contributes.commands.map((c: { command: string }) => c.command);
  assert.deepEqual([...registered.keys()].sort(), [...contributed].sort());
  registered.get('codelsp.togglePause')!();
  registered.get('codelsp.showExplanation')!();
  registered.get('codelsp.restartServer')!();
  assert.deepEqual(log, ['togglePause', 'showExplanation', 'restartServer']);
  disposables.forEach((d) => d.dispose());
  assert.equal(registered.size, 0);
});

test("the extension's command ids do not collide with the server's (vscode-languageclient registers those)", () => {
  const ours = Object.values(COMMANDS) as string[];
  for (const id of SERVER_COMMANDS) {
    assert.ok(!ours.includes(id), id);
  }
  assert.deepEqual(
    [COMMANDS.showExplanation, COMMANDS.writeFunctionAtCursor, COMMANDS.restartServer, COMMANDS.showLog, COMMANDS.togglePause],
    ['codelsp.showExplanation', 'codelsp.writeFunctionAtCursor', 'codelsp.restartServer', 'codelsp.showLog', 'codelsp.togglePause'],
  );
});

test('a missing handler is a startup error, not a dead command', () => {
  const h = handlers([]) as Partial<Handlers>;
  delete h.showLog;
  assert.throws(() => registerCommands(() => ({ dispose() {} }), h as Handlers), /codelsp\.showLog/);
});

test('package.json activates on startup and points at the compiled extension', () => {
  const pkg = packageJson();
  assert.deepEqual(pkg.activationEvents, ['onStartupFinished']);
  assert.equal(pkg.main, './out/src/extension.js');
  assert.ok(fs.existsSync(path.join(EXT_ROOT, pkg.main)), 'compiled');
  assert.match(pkg.dependencies['vscode-languageclient'], /^\^?11\./);
});

test('Explain and Write function send the server contract', () => {
  const range = { start: { line: 2, character: 0 }, end: { line: 5, character: 3 } };
  assert.deepEqual(explainParams('file:///a.py', range), {
    command: 'codelsp.explain',
    arguments: [{ uri: 'file:///a.py', range, insertComment: false }],
  });
  assert.deepEqual(writeFunctionParams('file:///a.py', { line: 3, character: 4 }), {
    command: 'codelsp.writeFunction',
    arguments: [{ uri: 'file:///a.py', position: { line: 3, character: 4 } }],
  });
});

test('server answers are checked before use', () => {
  assert.deepEqual(parseExplainResult({ markdown: 'Adds *a* and b.', applied: false }), { ok: true, value: { markdown: 'Adds *a* and b.' } });
  assert.equal(parseExplainResult({ markdown: '  ' }).ok, false);
  assert.equal(parseExplainResult(null).ok, false);
  assert.deepEqual(parseExplainResult({ applied: false, message: 'no function at line 3' }),
    { ok: false, error: 'codelsp: Explain: no function at line 3' });
  assert.deepEqual(parseWriteResult({ applied: false, message: 'no model' }), { ok: true, value: { applied: false, message: 'no model' } });
  assert.deepEqual(parseWriteResult({ applied: true }), { ok: true, value: { applied: true, message: '' } });
  assert.equal(parseWriteResult('done').ok, false);
});

test('the explanation panel escapes what it does not render', () => {
  const html = explanationHtml(markdownAsPre('<script>x</script> & co'), 'Explanation: <a>.py', 'vscode-resource:');
  assert.ok(!html.includes('<script>'));
  assert.ok(html.includes('&lt;script&gt;x&lt;/script&gt; &amp; co'));
  assert.ok(html.includes('Explanation: &lt;a&gt;.py'));
  assert.ok(html.includes("default-src 'none'"));
});
