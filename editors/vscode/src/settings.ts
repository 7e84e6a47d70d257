// VS Code settings -> the server's settings object (camelCase keys of codelsp/settings.py).
// Pure logic: no `vscode` import, so the unit tests run it with plain node.

/** The extension's own settings: how to start the server and what VS Code shows. Never sent. */
export const EXTENSION_KEYS = [
  'server.command',
  'server.args',
  'server.pythonPath',
  'completionMenu',
  'trace.server',
] as const;

/**
 * The server's settings, in the order of codelsp/settings.py. `codelsp.<key>` in VS Code is
 * `<key>` on the wire. The defaults live in package.json (contributes.configuration) and are
 * the server's own defaults; a test checks both against codelsp/settings.py.
 */
export const SERVER_KEYS = [
  'model',
  'instructModel',
  'nextEdit',
  'nextEditModel',
  'hfRepo',
  'hfFile',
  'instructHfRepo',
  'instructHfFile',
  'nGpuLayers',
  'contextSize',
  'maxTokens',
  'candidates',
  'promptCache',
  'promptCacheBytes',
  'hostCacheBytes',
  'kvCacheType',
  'moveRuns',
  'warmDocuments',
  'temperature',
  'topK',
  'topP',
  'repeatPenalty',
  'seed',
  'speculative',
  'draftModel',
  'fimTemplate',
  'fimOrder',
  'timeoutMs',
  'nThreads',
  'logLevel',
  'systemPrompt',
  'actionMaxTokens',
  'extraContextTokens',
  'repoContextTokens',
  'backend',
  'url',
  'apiKey',
] as const;

export type ServerKey = (typeof SERVER_KEYS)[number];

/** Settings whose empty value in VS Code means "the server decides" (null on the wire). */
const PATHS: ReadonlySet<string> = new Set(['model', 'instructModel', 'nextEditModel', 'draftModel']);
const EMPTY_IS_NULL: ReadonlySet<string> = new Set([
  'model', 'instructModel', 'nextEditModel', 'draftModel', 'hfRepo', 'hfFile', 'instructHfRepo', 'instructHfFile', 'fimTemplate', 'url', 'apiKey',
]);

/** `~` and `~/x` -> the home folder; `${workspaceFolder}` -> the first workspace folder. */
export function expandPath(value: string, home: string, workspaceFolder?: string): string {
  let out = value;
  if (out === '~') {
    out = home;
  } else if (out.startsWith('~/') || out.startsWith('~\\')) {
    out = home.replace(/[\\/]$/, '') + out.slice(1);
  }
  if (workspaceFolder !== undefined) {
    out = out.split('${workspaceFolder}').join(workspaceFolder);
  }
  return out;
}

export interface PathContext {
  home: string;
  workspaceFolder?: string;
}

/**
 * The object sent as initializationOptions and as `{"codelsp": ...}` in
 * workspace/didChangeConfiguration. `get(key)` returns VS Code's effective value of
 * `codelsp.<key>` (the package.json default when the user set nothing). Every server key is
 * sent, so a setting the user removes goes back to its default on the server too.
 * Values of the wrong type are passed through: the server reports them in the log and keeps
 * the previous value.
 */
export function serverSettings(get: (key: ServerKey) => unknown, paths: PathContext): Record<ServerKey, unknown> {
  const out = {} as Record<ServerKey, unknown>;
  for (const key of SERVER_KEYS) {
    let value = get(key);
    if (typeof value === 'string') {
      value = value.trim();
      if (PATHS.has(key) && value !== '') {
        value = expandPath(value as string, paths.home, paths.workspaceFolder);
      }
    }
    if (value === undefined || (EMPTY_IS_NULL.has(key) && value === '')) {
      value = null;
    }
    if (key === 'nThreads' && (value === 0 || value === null)) {
      value = null; // 0 in VS Code: all cores
    }
    if (key === 'systemPrompt' && (value === '' || value === null)) {
      continue; // empty: the server's own prompt (it accepts no null here)
    }
    out[key] = value;
  }
  return out;
}

/**
 * Answers a workspace/configuration request from the server: the `codelsp` section gets the
 * mapped server settings (not VS Code's raw section, which also holds the extension's own
 * keys); other sections are left to `fallback`.
 */
export function answerConfiguration(
  items: ReadonlyArray<{ section?: string }>,
  settings: () => Record<string, unknown>,
  fallback: ReadonlyArray<unknown>,
): unknown[] {
  return items.map((item, i) => (item.section === 'codelsp' ? settings() : fallback[i] ?? null));
}
