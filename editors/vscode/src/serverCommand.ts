// How to start `codelsp serve`, and what to say when it cannot be found. Pure logic (no vscode).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expandPath } from './settings';

export interface ServerCommandSettings {
  command?: unknown; // codelsp.server.command, default "codelsp"
  args?: unknown; // codelsp.server.args, default ["serve"]
  pythonPath?: unknown; // codelsp.server.pythonPath: when set, `<python> -m codelsp serve`
}

export interface ServerCommand {
  command: string;
  args: string[];
  /** The setting that named the program, for messages. */
  setting: 'codelsp.server.command' | 'codelsp.server.pythonPath';
}

export function serverCommand(s: ServerCommandSettings, home: string, workspaceFolder?: string): ServerCommand {
  const python = typeof s.pythonPath === 'string' ? s.pythonPath.trim() : '';
  const args = Array.isArray(s.args) && s.args.every((a) => typeof a === 'string') ? [...(s.args as string[])] : ['serve'];
  if (python) {
    return {
      command: expandPath(python, home, workspaceFolder),
      args: ['-m', 'codelsp', ...args],
      setting: 'codelsp.server.pythonPath',
    };
  }
  const command = typeof s.command === 'string' && s.command.trim() ? s.command.trim() : 'codelsp';
  return { command: expandPath(command, home, workspaceFolder), args, setting: 'codelsp.server.command' };
}

function isExecutableFile(p: string): boolean {
  try {
    const st = fs.statSync(p);
    if (!st.isFile()) {
      return false;
    }
    if (process.platform === 'win32') {
      return true;
    }
    fs.accessSync(p, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The full path of `command`: itself when it names a path (relative ones against `cwd`), else
 * the first match on PATH (with PATHEXT on Windows). undefined when there is none.
 */
export function findExecutable(
  command: string,
  env: { PATH?: string; PATHEXT?: string },
  opts: { platform?: string; cwd?: string; isFile?: (p: string) => boolean } = {},
): string | undefined {
  const platform = opts.platform ?? process.platform;
  const isFile = opts.isFile ?? isExecutableFile;
  const p = platform === 'win32' ? path.win32 : path.posix;
  const exts = platform === 'win32' ? ['', ...(env.PATHEXT ?? '.COM;.EXE;.BAT;.CMD').split(';').filter(Boolean)] : [''];
  const hasSep = command.includes('/') || (platform === 'win32' && command.includes('\\'));
  const candidates: string[] = [];
  if (hasSep) {
    const full = p.isAbsolute(command) ? command : p.resolve(opts.cwd ?? process.cwd(), command);
    candidates.push(...exts.map((e) => full + e));
  } else {
    const dirs = (env.PATH ?? '').split(platform === 'win32' ? ';' : ':').filter(Boolean);
    for (const dir of dirs) {
      candidates.push(...exts.map((e) => p.join(dir, command + e)));
    }
  }
  return candidates.find(isFile);
}

/** The one-line error shown when the server program is missing. */
export function notFoundMessage(sc: ServerCommand): string {
  if (sc.setting === 'codelsp.server.pythonPath') {
    return `codelsp: the Python interpreter "${sc.command}" (setting codelsp.server.pythonPath) was not found. ` +
      'Point it at the python of the environment where codelsp is installed.';
  }
  return `codelsp: the server program "${sc.command}" was not found on PATH. Install codelsp ` +
    '(see the README), or set codelsp.server.command to its full path ' +
    '(for example ~/codelsp/.venv/bin/codelsp), or codelsp.server.pythonPath to a python that has it.';
}

/** The message when the program exists but exits before the handshake (e.g. no codelsp module). */
export function startFailedMessage(sc: ServerCommand, error: unknown): string {
  const detail = error instanceof Error ? error.message : String(error);
  return `codelsp: "${[sc.command, ...sc.args].join(' ')}" did not start (${detail}). ` +
    'Its log (codelsp: Show Log) says why.';
}
