// The extension's commands and the server's workspace/executeCommand contract. Pure logic.

/**
 * Commands the server advertises (executeCommandProvider). vscode-languageclient registers VS
 * Code commands with exactly these ids, so the extension's own ids must differ.
 */
export const SERVER_COMMANDS = [
  'codelsp.explain', 'codelsp.writeFunction', 'codelsp.document', 'codelsp.fix', 'codelsp.nextEdit.accept',
] as const;

/** The extension's own commands (package.json contributes.commands), by handler name. */
export const COMMANDS = {
  showExplanation: 'codelsp.showExplanation',
  writeFunctionAtCursor: 'codelsp.writeFunctionAtCursor',
  restartServer: 'codelsp.restartServer',
  showLog: 'codelsp.showLog',
  togglePause: 'codelsp.togglePause',
  menu: 'codelsp.menu',
  applyNextEdit: 'codelsp.applyNextEdit',
} as const;

export type CommandName = keyof typeof COMMANDS;
export type Handlers = Record<CommandName, (...args: unknown[]) => unknown>;

export interface Disposable {
  dispose(): unknown;
}

/** Registers every command with its handler; `register` is vscode.commands.registerCommand. */
export function registerCommands(
  register: (id: string, handler: (...args: unknown[]) => unknown) => Disposable,
  handlers: Handlers,
): Disposable[] {
  return (Object.keys(COMMANDS) as CommandName[]).map((name) => {
    const handler = handlers[name];
    if (typeof handler !== 'function') {
      throw new Error(`codelsp: no handler for ${COMMANDS[name]}`);
    }
    return register(COMMANDS[name], handler);
  });
}

export interface LspPosition {
  line: number;
  character: number;
}
export interface LspRange {
  start: LspPosition;
  end: LspPosition;
}

export interface ExecuteCommandParams {
  command: string;
  arguments: unknown[];
}

/** workspace/executeCommand params for the Explain panel: markdown only, no edit. */
export function explainParams(uri: string, range: LspRange): ExecuteCommandParams {
  return { command: 'codelsp.explain', arguments: [{ uri, range, insertComment: false }] };
}

/** workspace/executeCommand params for Write function at the cursor (the server applies the edit). */
export function writeFunctionParams(uri: string, position: LspPosition): ExecuteCommandParams {
  return { command: 'codelsp.writeFunction', arguments: [{ uri, position }] };
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

export function parseExplainResult(result: unknown): Parsed<{ markdown: string }> {
  if (result && typeof result === 'object' && typeof (result as { markdown?: unknown }).markdown === 'string') {
    const markdown = (result as { markdown: string }).markdown;
    if (markdown.trim() === '') {
      return { ok: false, error: 'codelsp: the model returned an empty explanation.' };
    }
    return { ok: true, value: { markdown } };
  }
  const message = result && typeof result === 'object' ? (result as { message?: unknown }).message : undefined;
  if (typeof message === 'string' && message) {
    return { ok: false, error: `codelsp: Explain: ${message}` };
  }
  return { ok: false, error: 'codelsp: the server did not return an explanation (is it an older codelsp?).' };
}

export function parseWriteResult(result: unknown): Parsed<{ applied: boolean; message: string }> {
  if (result && typeof result === 'object' && typeof (result as { applied?: unknown }).applied === 'boolean') {
    const r = result as { applied: boolean; message?: unknown };
    return { ok: true, value: { applied: r.applied, message: typeof r.message === 'string' ? r.message : '' } };
  }
  return { ok: false, error: 'codelsp: the server did not answer Write function (is it an older codelsp?).' };
}

/** The HTML of the Explain panel around the markdown already rendered to HTML. */
export function explanationHtml(bodyHtml: string, title: string, cspSource: string): string {
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src ${cspSource} 'unsafe-inline'; img-src ${cspSource} https: data:;">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>${esc(title)}</title>
<style>
body { font-family: var(--vscode-font-family); font-size: var(--vscode-font-size); color: var(--vscode-foreground); padding: 0 1em; line-height: 1.5; }
pre, code { font-family: var(--vscode-editor-font-family); }
pre { background: var(--vscode-textCodeBlock-background); padding: .6em; overflow-x: auto; }
</style></head>
<body>
<h3>${esc(title)}</h3>
${bodyHtml}
</body></html>`;
}

/** Plain fallback when VS Code's markdown renderer is not available. */
export function markdownAsPre(markdown: string): string {
  const esc = markdown.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return `<pre style="white-space: pre-wrap">${esc}</pre>`;
}
