// Definitions the editor's language servers know, sent to codelsp as repository context.
// For the identifiers near the cursor the extension asks VS Code for their definitions
// (`vscode.executeDefinitionProvider`), takes a few lines at each one that lies in another file,
// and sends them with codelsp's `codelsp/context` notification (see the server's README,
// "Repository context"). Only a changed set is sent: the server puts the snippets at the head of
// the prompt, so sending the same ones again would cost nothing but re-sending other ones costs
// a re-evaluation. Pure logic (no vscode).

export const CONTEXT_NOTIFICATION = 'codelsp/context';

/** Lines above the cursor whose identifiers are looked up, and how many identifiers at most. */
export const LOOKBACK_LINES = 3;
export const MAX_IDENTIFIERS = 8;
/** Lines of a definition sent (its first line and the ones below it), and snippets at most. */
export const SNIPPET_LINES = 12;
export const MAX_SNIPPETS = 6;

const KEYWORDS = new Set([
  'and', 'as', 'assert', 'async', 'await', 'break', 'class', 'const', 'continue', 'def', 'del', 'elif', 'else',
  'except', 'export', 'false', 'False', 'finally', 'for', 'from', 'function', 'if', 'import', 'in', 'is', 'lambda',
  'let', 'new', 'None', 'nonlocal', 'not', 'null', 'or', 'pass', 'raise', 'return', 'self', 'this', 'true', 'True',
  'try', 'var', 'while', 'with', 'yield',
]);

export interface Spot {
  line: number;
  character: number;
  name: string;
}

/**
 * The identifiers on the cursor's line up to the cursor and on the LOOKBACK_LINES lines above it,
 * nearest first, each name once, keywords left out, at most MAX_IDENTIFIERS. `lines` is the
 * document's text split into lines; positions are zero-based (UTF-16, as VS Code's).
 */
export function identifiersNear(lines: readonly string[], line: number, character: number): Spot[] {
  const out: Spot[] = [];
  const seen = new Set<string>();
  for (let row = line; row >= Math.max(0, line - LOOKBACK_LINES) && out.length < MAX_IDENTIFIERS; row--) {
    const text = row === line ? (lines[row] ?? '').slice(0, character) : lines[row] ?? '';
    const found = [...text.matchAll(/[A-Za-z_][A-Za-z0-9_]*/g)].reverse();
    for (const m of found) {
      const name = m[0];
      if (KEYWORDS.has(name) || seen.has(name) || /^[0-9]/.test(name)) {
        continue;
      }
      seen.add(name);
      out.push({ line: row, character: m.index ?? 0, name });
      if (out.length >= MAX_IDENTIFIERS) {
        break;
      }
    }
  }
  return out;
}

export interface Definition {
  /** The file's URI as the server spells URIs (the language client's converter). */
  uri: string;
  /** Zero-based line of the definition. */
  line: number;
}

export interface Snippet {
  path: string;
  text: string;
}

/**
 * The snippets for `definitions`: SNIPPET_LINES lines from each definition's line (`read(uri)`
 * gives a file's lines, or undefined when it cannot be read), leaving out those in the current
 * document (`current`: its URI), the same place twice and empty text; at most MAX_SNIPPETS.
 */
export function snippetsFor(
  definitions: readonly Definition[],
  current: string,
  read: (uri: string) => readonly string[] | undefined,
): Snippet[] {
  const out: Snippet[] = [];
  const seen = new Set<string>();
  for (const d of definitions) {
    const key = `${d.uri}:${d.line}`;
    if (d.uri === current || seen.has(key) || out.length >= MAX_SNIPPETS) {
      continue;
    }
    seen.add(key);
    const lines = read(d.uri);
    if (!lines) {
      continue;
    }
    const text = lines.slice(d.line, d.line + SNIPPET_LINES).join('\n');
    if (text.trim()) {
      out.push({ path: d.uri, text: text + '\n' });
    }
  }
  return out;
}

export interface ContextParams {
  textDocument: { uri: string };
  snippets: Snippet[];
}

/** The params to send, or undefined when they equal what was sent last for the document. */
export function contextParams(uri: string, snippets: Snippet[], last: Map<string, string>): ContextParams | undefined {
  const key = JSON.stringify(snippets);
  if (last.get(uri) === key) {
    return undefined;
  }
  last.set(uri, key);
  return { textDocument: { uri }, snippets };
}
