// Language-client middleware: pausing completions, and keeping the completion menu optional.
// Pure logic: type-only imports are erased, so this module loads without VS Code.
import type { Middleware } from 'vscode-languageclient';

export interface CompletionGate {
  /** Toggle pause: while true no completion request reaches the server. */
  isPaused(): boolean;
  /** codelsp.completionMenu: also ask the server for suggest-widget items. */
  completionMenu(): boolean;
}

type InlineMiddleware = NonNullable<Middleware['provideInlineCompletionItems']>;
type CompletionMiddleware = NonNullable<Middleware['provideCompletionItem']>;

/**
 * Ghost text comes from textDocument/inlineCompletion; while paused the middleware answers
 * with no items and sends nothing, so the model does no work. The completion menu
 * (textDocument/completion) is off unless codelsp.completionMenu is set, so one keystroke
 * costs one model request, not two.
 */
export function completionMiddleware(gate: CompletionGate): Pick<Middleware, 'provideInlineCompletionItems' | 'provideCompletionItem'> {
  const provideInlineCompletionItems: InlineMiddleware = (document, position, context, token, next) => {
    if (gate.isPaused()) {
      return [];
    }
    return next(document, position, context, token);
  };
  const provideCompletionItem: CompletionMiddleware = (document, position, context, token, next) => {
    if (gate.isPaused() || !gate.completionMenu()) {
      return [];
    }
    return next(document, position, context, token);
  };
  return { provideInlineCompletionItems, provideCompletionItem };
}
