// The model state shown in the status bar. Pure logic (no vscode).

export type ModelStateKind = 'stopped' | 'starting' | 'loading' | 'ready' | 'error' | 'notFound';

export interface ModelState {
  kind: ModelStateKind;
  message: string;
  /** 0-100 while loading, when the server reports it through $/progress. */
  percentage?: number;
}

export const STATUS_NOTIFICATION = 'codelsp/status';

/**
 * Reads the params of the server's `codelsp/status` notification
 * (`{"state": "loading"|"ready"|"error", "message": str}`). undefined for anything else, which
 * the caller logs and ignores.
 */
export function parseStatus(params: unknown): ModelState | undefined {
  if (!params || typeof params !== 'object') {
    return undefined;
  }
  const { state, message, percentage } = params as Record<string, unknown>;
  if (state !== 'loading' && state !== 'ready' && state !== 'error') {
    return undefined;
  }
  const out: ModelState = { kind: state, message: typeof message === 'string' ? message : '' };
  if (typeof percentage === 'number' && Number.isFinite(percentage)) {
    out.percentage = Math.max(0, Math.min(100, Math.round(percentage)));
  }
  return out;
}

export interface StatusView {
  text: string;
  tooltip: string;
  /** What screen readers say (also the item's aria-label): state, message, paused. */
  label: string;
  /** Background colour theme id: warning or error, or none. */
  background?: 'statusBarItem.warningBackground' | 'statusBarItem.errorBackground';
}

export function statusView(state: ModelState, paused: boolean): StatusView {
  const detail = state.message ? `\n\n${state.message}` : '';
  const pauseLine = paused ? '\n\nCompletions are paused (codelsp: Toggle Pause Completions).' : '';
  const click = '\n\nClick for the codelsp menu.';
  let text: string;
  let tooltip: string;
  let background: StatusView['background'];
  switch (state.kind) {
    case 'starting':
      text = '$(sync~spin) codelsp';
      tooltip = 'codelsp: starting the server';
      break;
    case 'loading':
      text = state.percentage !== undefined ? `$(sync~spin) codelsp ${state.percentage}%` : '$(sync~spin) codelsp';
      tooltip = 'codelsp: loading the model';
      break;
    case 'ready':
      text = '$(check) codelsp';
      tooltip = 'codelsp: model ready';
      break;
    case 'error':
      text = '$(error) codelsp';
      tooltip = 'codelsp: model error';
      background = 'statusBarItem.errorBackground';
      break;
    case 'notFound':
      text = '$(error) codelsp';
      tooltip = 'codelsp: server not found';
      background = 'statusBarItem.errorBackground';
      break;
    default:
      text = '$(circle-slash) codelsp';
      tooltip = 'codelsp: server stopped';
      background = 'statusBarItem.warningBackground';
  }
  if (paused) {
    text = text.replace(/^\$\([^)]*\)/, '$(debug-pause)');
    if (!background) {
      background = 'statusBarItem.warningBackground';
    }
  }
  const label = [tooltip, state.message, paused ? 'completions paused' : ''].filter(Boolean).join('; ');
  return { text, tooltip: tooltip + detail + pauseLine + click, label, background };
}

export type LogLevel = 'trace' | 'info' | 'warn' | 'error';

/**
 * The log level for one line of the server's stderr in the codelsp output channel.
 * codelsp's own lines ("codelsp LEVEL message") keep their level; INFO and DEBUG ones also
 * arrive as window/logMessage, so they go to trace (shown when the channel's level is Trace).
 * Anything else (llama.cpp's loading chatter, a Python traceback) is info, not an error.
 */
export function stderrLevel(line: string): LogLevel {
  const m = /^codelsp (DEBUG|INFO|WARNING|ERROR|CRITICAL) /.exec(line);
  if (!m) {
    return 'info';
  }
  switch (m[1]) {
    case 'ERROR':
    case 'CRITICAL':
      return 'error';
    case 'WARNING':
      return 'warn';
    default:
      return 'trace';
  }
}
