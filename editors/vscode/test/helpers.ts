import * as fs from 'node:fs';
import * as path from 'node:path';

/** editors/vscode (the compiled tests live in out/test). */
export const EXT_ROOT = path.resolve(__dirname, '..', '..');
export const REPO_ROOT = path.resolve(EXT_ROOT, '..', '..');

export function packageJson(): any {
  return JSON.parse(fs.readFileSync(path.join(EXT_ROOT, 'package.json'), 'utf8'));
}

/** The package.json default of every `codelsp.*` setting, keyed without the prefix. */
export function contributedDefaults(): Record<string, unknown> {
  const props = packageJson().contributes.configuration.properties as Record<string, { default: unknown }>;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(props)) {
    out[k.replace(/^codelsp\./, '')] = v.default;
  }
  return out;
}

function pyLiteral(src: string): unknown {
  let s = src.trim();
  const f = /^field\(default=(.*?)(,.*)?\)$/.exec(s);
  if (f) s = f[1].trim();
  if (s === 'None') return null;
  if (s === 'True') return true;
  if (s === 'False') return false;
  const shift = /^(\d+)\s*<<\s*(\d+)$/.exec(s);
  if (shift) return Number(shift[1]) * 2 ** Number(shift[2]);
  if (/^-?\d+$/.test(s)) return Number(s);
  if (/^-?\d*\.\d+(e-?\d+)?$/.test(s)) return Number(s);
  const strings = s.match(/"(?:[^"\\]|\\.)*"/g);
  if (strings && strings.join('') === s.replace(/\s+(?=")/g, '').replace(/"\s+"/g, '""')) {
    return strings.map((x) => JSON.parse(x)).join('');
  }
  throw new Error(`cannot read the Python literal ${src}`);
}

/** The first argument of a Python call's argument text (up to its first top-level comma). */
function firstArgument(args: string): string {
  let depth = 0;
  let quote = '';
  for (let i = 0; i < args.length; i++) {
    const c = args[i];
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if ('([{'.includes(c)) depth++;
    else if (')]}'.includes(c)) {
      if (depth === 0) return args.slice(0, i);
      depth--;
    } else if (c === ',' && depth === 0) return args.slice(0, i);
  }
  return args;
}

/** camelCase key -> default, read from the Settings dataclass in codelsp/settings.py. */
export function serverDefaults(): Record<string, unknown> {
  const text = fs.readFileSync(path.join(REPO_ROOT, 'codelsp', 'settings.py'), 'utf8');
  const body = text.split(/^class Settings\b.*$/m)[1].split(/^    # --- construction/m)[0];
  const lines = body.split('\n');
  const out: Record<string, unknown> = {};
  for (let i = 0; i < lines.length; i++) {
    const m = /^    ([a-z_]+): [^=]+= (.*?)\s*(#.*)?$/.exec(lines[i]);
    if (!m) continue;
    let value = m[2];
    // each setting is declared once as `name: type = setting(DEFAULT, ...)`, the call possibly
    // running over the next lines; its first argument is the default
    if (value.startsWith('setting(')) {
      let call = value.slice('setting('.length);
      while (i + 1 < lines.length && /^\s{8}/.test(lines[i + 1])) call += ' ' + lines[++i].trim();
      if (/\bwire=False\b/.test(call)) continue; // the command line only: not an editor setting
      value = firstArgument(call);
    } else if (value === '(') {
      const parts: string[] = [];
      while (!/^\s*\)\s*$/.test(lines[++i])) parts.push(lines[i].trim());
      value = parts.join(' ');
    }
    const camel = m[1].replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    out[camel] = pyLiteral(value);
  }
  return out;
}
