// Next edits (setting codelsp.nextEdit): the server's `textDocument/copilotInlineEdit` answer,
// checked the way copilot.el checks it, and shown as a decoration with a command to apply it
// (inline edits are not in VS Code's stable API). Pure logic (no vscode).

import type { LspRange } from './commands';

export const NEXT_EDIT_REQUEST = 'textDocument/copilotInlineEdit';
export const SHOWN_NOTIFICATION = 'textDocument/didShowInlineEdit';
/** Milliseconds without typing before the next edit is asked for. */
export const NEXT_EDIT_DELAY_MS = 600;

export interface NextEdit {
  text: string;
  range: LspRange;
  textDocument: { uri: string; version: number };
  command?: { title: string; command: string; arguments?: unknown[] };
}

/** The request's params: the document's URI and version, the cursor (LSP, UTF-16). */
export function nextEditParams(uri: string, version: number, line: number, character: number) {
  return { textDocument: { uri, version }, position: { line, character } };
}

/**
 * The edit to show from the server's answer, or undefined: none, a malformed one, or one for
 * another document or version than the one asked about (its range would be in other coordinates).
 */
export function pickEdit(result: unknown, uri: string, version: number): NextEdit | undefined {
  const edits = (result as { edits?: unknown })?.edits;
  const e = Array.isArray(edits) ? (edits[0] as NextEdit | undefined) : undefined;
  if (!e || typeof e.text !== 'string' || !e.range || !e.textDocument) {
    return undefined;
  }
  if (e.textDocument.uri !== uri || e.textDocument.version !== version) {
    return undefined;
  }
  return e;
}

/** The decoration's text after the replaced range: the new text on one line, shortened. */
export function decorationText(edit: NextEdit, max = 80): string {
  const flat = edit.text.replace(/\r?\n/g, ' ⏎ ');
  const shown = flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
  return edit.text === '' ? ' ⌫ (delete)' : ` → ${shown}`;
}
