import assert from 'node:assert/strict';
import { test } from 'node:test';
import { answerConfiguration, EXTENSION_KEYS, expandPath, serverSettings, SERVER_KEYS } from '../src/settings';
import { contributedDefaults, serverDefaults } from './helpers';

const home = '/home/ada';
const defaults = contributedDefaults();
const withUser = (user: Record<string, unknown>) => serverSettings((k) => (k in user ? user[k] : defaults[k]), { home, workspaceFolder: '/work/proj' });

test('the VS Code settings are exactly the server settings of codelsp/settings.py, plus the extension own', () => {
  const server = serverDefaults();
  assert.ok(Object.keys(server).length >= 18, 'settings.py was read');
  assert.deepEqual([...SERVER_KEYS].sort(), Object.keys(server).sort());
  assert.deepEqual(Object.keys(defaults).sort(), [...SERVER_KEYS, ...EXTENSION_KEYS].sort());
});

test('initializationOptions with nothing set are the server defaults', () => {
  assert.deepEqual(withUser({}), serverDefaults());
});

test('user values are sent under their camelCase keys', () => {
  const s = withUser({ model: '/models/cl.gguf', maxTokens: 128, temperature: 0, promptCache: false, fimOrder: 'psm', nThreads: 4 });
  assert.equal(s.model, '/models/cl.gguf');
  assert.equal(s.maxTokens, 128);
  assert.equal(s.temperature, 0);
  assert.equal(s.promptCache, false);
  assert.equal(s.fimOrder, 'psm');
  assert.equal(s.nThreads, 4);
  assert.equal(s.instructModel, null);
  for (const k of EXTENSION_KEYS) {
    assert.ok(!(k in s), `${k} is the extension's own setting and is not sent`);
  }
});

test('model paths expand ~ and ${workspaceFolder}; empty means the server default', () => {
  assert.equal(withUser({ model: '~/models/a.gguf' }).model, '/home/ada/models/a.gguf');
  assert.equal(withUser({ instructModel: '${workspaceFolder}/m/i.gguf' }).instructModel, '/work/proj/m/i.gguf');
  assert.equal(withUser({ model: '   ' }).model, null);
  assert.equal(withUser({ fimTemplate: '' }).fimTemplate, null);
  assert.equal(withUser({ fimTemplate: 'qwen' }).fimTemplate, 'qwen');
  assert.equal(expandPath('~', home), home);
  assert.equal(expandPath('a~/b', home), 'a~/b');
});

test('an empty system prompt is left out (the server keeps its own)', () => {
  assert.ok(!('systemPrompt' in withUser({ systemPrompt: '' })));
  assert.equal(withUser({ systemPrompt: 'Be terse.' }).systemPrompt, 'Be terse.');
});

test('values of the wrong type pass through for the server to report', () => {
  assert.equal(withUser({ maxTokens: 'lots' }).maxTokens, 'lots');
});

test('workspace/configuration for section codelsp answers the mapped settings, other sections pass through', () => {
  const mapped = withUser({ maxTokens: 7 });
  const out = answerConfiguration([{ section: 'codelsp' }, { section: 'editor' }, {}], () => mapped, ['raw-codelsp', { tabSize: 4 }]);
  assert.deepEqual(out, [mapped, { tabSize: 4 }, null]);
});
