// Telling the server which document the user is in now. LSP has no message for that, so the
// extension sends codelsp's own `codelsp/didFocus` notification when the active editor changes;
// the server then evaluates that document's prompt at the cursor in the background (restoring its
// saved state), so the first keystroke after a switch finds it ready. Pure logic (no vscode).

export const FOCUS_NOTIFICATION = 'codelsp/didFocus';

/** The schemes the client serves (its documentSelector): output panels and the like are not sent. */
export const FOCUS_SCHEMES: readonly string[] = ['file', 'untitled'];

export interface FocusParams {
  textDocument: { uri: string };
  /** Zero-based line and UTF-16 character of the cursor, as in LSP. */
  position: { line: number; character: number };
}

/** What the extension knows of an editor: the parts of vscode.TextEditor it reads. */
export interface FocusedEditor {
  document: { uri: { scheme: string } };
  selection: { active: { line: number; character: number } };
}

/**
 * The `codelsp/didFocus` params for the editor now in front, or undefined when nothing should be
 * sent: no editor (the focus went to a panel), a scheme the server does not serve, or completions
 * paused (the server should do no model work). `asUri` converts the document's URI as the
 * language client does for every other message, so the server finds the open document.
 */
export function focusParams<E extends FocusedEditor>(
  editor: E | undefined,
  paused: boolean,
  asUri: (uri: E['document']['uri']) => string,
): FocusParams | undefined {
  if (!editor || paused || !FOCUS_SCHEMES.includes(editor.document.uri.scheme)) {
    return undefined;
  }
  const { line, character } = editor.selection.active;
  return { textDocument: { uri: asUri(editor.document.uri) }, position: { line, character } };
}
