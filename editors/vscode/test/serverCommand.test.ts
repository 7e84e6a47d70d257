import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { findExecutable, notFoundMessage, serverCommand, startFailedMessage } from '../src/serverCommand';

test('default: `codelsp serve`', () => {
  assert.deepEqual(serverCommand({ command: 'codelsp', args: ['serve'], pythonPath: '' }, '/h'), {
    command: 'codelsp', args: ['serve'], setting: 'codelsp.server.command',
  });
  assert.deepEqual(serverCommand({}, '/h').args, ['serve']);
});

test('pythonPath runs `python -m codelsp serve` with the extra args', () => {
  assert.deepEqual(serverCommand({ command: 'codelsp', args: ['serve', '--log-level', 'debug'], pythonPath: '~/venv/bin/python' }, '/h'), {
    command: '/h/venv/bin/python', args: ['-m', 'codelsp', 'serve', '--log-level', 'debug'], setting: 'codelsp.server.pythonPath',
  });
});

test('a command path expands ~ and ${workspaceFolder}', () => {
  assert.equal(serverCommand({ command: '${workspaceFolder}/.venv/bin/codelsp' }, '/h', '/w').command, '/w/.venv/bin/codelsp');
  assert.equal(serverCommand({ command: '  ' }, '/h').command, 'codelsp');
});

test('findExecutable searches PATH, and takes paths as they are', () => {
  const files = new Set(['/opt/venv/bin/codelsp', '/usr/bin/python3', '/proj/tools/codelsp']);
  const isFile = (p: string) => files.has(p);
  const env = { PATH: '/usr/local/bin:/opt/venv/bin:/usr/bin' };
  assert.equal(findExecutable('codelsp', env, { platform: 'linux', isFile }), '/opt/venv/bin/codelsp');
  assert.equal(findExecutable('nope', env, { platform: 'linux', isFile }), undefined);
  assert.equal(findExecutable('/usr/bin/python3', { PATH: '' }, { platform: 'linux', isFile }), '/usr/bin/python3');
  assert.equal(findExecutable('tools/codelsp', env, { platform: 'linux', isFile, cwd: '/proj' }), '/proj/tools/codelsp');
  assert.equal(findExecutable('codelsp', {}, { platform: 'linux', isFile }), undefined);
});

test('findExecutable on Windows tries PATHEXT', () => {
  const isFile = (p: string) => p === 'C:\\venv\\Scripts\\codelsp.EXE';
  assert.equal(findExecutable('codelsp', { PATH: 'C:\\Windows;C:\\venv\\Scripts', PATHEXT: '.COM;.EXE' }, { platform: 'win32', isFile }),
    'C:\\venv\\Scripts\\codelsp.EXE');
});

test('findExecutable needs an executable file on disk', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codelsp-vscode-'));
  try {
    const exe = path.join(dir, 'codelsp');
    fs.writeFileSync(exe, '#!/bin/sh\n');
    fs.chmodSync(exe, 0o644);
    if (process.platform !== 'win32' && process.getuid?.() !== 0) {
      assert.equal(findExecutable('codelsp', { PATH: dir }), undefined, 'not executable');
    }
    fs.chmodSync(exe, 0o755);
    assert.equal(findExecutable('codelsp', { PATH: dir }), exe);
    assert.equal(findExecutable(dir, { PATH: '' }), undefined, 'a folder is no program');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the not-found message names the program, the setting to change and the README', () => {
  const m = notFoundMessage(serverCommand({ command: 'codelsp' }, '/h'));
  assert.match(m, /"codelsp" was not found/);
  assert.match(m, /codelsp\.server\.command/);
  assert.match(m, /README/);
  assert.match(notFoundMessage(serverCommand({ pythonPath: '/x/python' }, '/h')), /"\/x\/python".*codelsp\.server\.pythonPath/);
  assert.match(startFailedMessage(serverCommand({}, '/h'), new Error('exit 1')), /"codelsp serve" did not start \(exit 1\)/);
});
