// VS Code glue: starts `codelsp serve`, keeps its settings in step, and wires the commands and
// the status bar. The logic worth testing lives in the modules without `vscode` imports.
import * as os from 'node:os';
import * as readline from 'node:readline';
import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  State,
  type LanguageClientOptions,
  type ServerOptions,
} from 'vscode-languageclient/node';
import {
  COMMANDS,
  explainParams,
  explanationHtml,
  markdownAsPre,
  parseExplainResult,
  parseWriteResult,
  registerCommands,
  writeFunctionParams,
} from './commands';
import { contextParams, identifiersNear, snippetsFor, CONTEXT_NOTIFICATION, type Definition } from './context';
import { focusParams, FOCUS_NOTIFICATION } from './focus';
import { decorationText, nextEditParams, NEXT_EDIT_DELAY_MS, NEXT_EDIT_REQUEST, pickEdit, SHOWN_NOTIFICATION, type NextEdit } from './nextEdit';
import { completionMiddleware } from './middleware';
import { findExecutable, notFoundMessage, serverCommand, startFailedMessage, type ServerCommand } from './serverCommand';
import { answerConfiguration, serverSettings, SERVER_KEYS, type ServerKey } from './settings';
import { parseStatus, statusView, stderrLevel, STATUS_NOTIFICATION, type ModelState } from './status';

const PAUSED_KEY = 'codelsp.paused';

class CodelspExtension implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private readonly output: vscode.LogOutputChannel;
  private readonly item: vscode.StatusBarItem;
  private state: ModelState = { kind: 'stopped', message: '' };
  private paused: boolean;
  private readonly contextSent = new Map<string, string>(); // uri -> snippets last sent (codelsp/context)
  private contextTimer: NodeJS.Timeout | undefined;
  private contextLine = -1;
  private lastCommand = '';
  private explainPanel: vscode.WebviewPanel | undefined;
  private starting: Promise<void> | undefined;
  private readonly disposables: vscode.Disposable[] = [];
  private readonly nextEditStyle = vscode.window.createTextEditorDecorationType({
    textDecoration: 'line-through',
    after: { color: new vscode.ThemeColor('editorGhostText.foreground'), fontStyle: 'italic' },
  });
  private nextEdit: { edit: NextEdit; editor: vscode.TextEditor } | undefined;
  private nextEditTimer: NodeJS.Timeout | undefined;

  constructor(private readonly context: vscode.ExtensionContext) {
    this.output = vscode.window.createOutputChannel('codelsp', { log: true });
    this.item = vscode.window.createStatusBarItem('codelsp.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'codelsp';
    this.item.command = COMMANDS.menu;
    this.paused = context.globalState.get<boolean>(PAUSED_KEY, false);
    this.render();
    this.item.show();
    this.disposables.push(
      this.output,
      this.item,
      ...registerCommands((id, fn) => vscode.commands.registerCommand(id, fn), {
        showExplanation: () => this.showExplanation(),
        writeFunctionAtCursor: () => this.writeFunction(),
        restartServer: () => this.restart(),
        showLog: () => this.output.show(true),
        togglePause: () => this.togglePause(),
        menu: () => this.menu(),
        applyNextEdit: () => this.applyNextEdit(),
      }),
      this.nextEditStyle,
      vscode.workspace.onDidChangeTextDocument((e) => this.scheduleNextEdit(e.document)),
      vscode.workspace.onDidChangeConfiguration((e) => this.onConfigurationChanged(e)),
      vscode.window.onDidChangeActiveTextEditor((editor) => {
        this.sendFocus(editor);
        this.scheduleContext(editor);
      }),
      vscode.window.onDidChangeTextEditorSelection((e) => {
        if (e.selections[0]?.active.line !== this.contextLine) {
          this.scheduleContext(e.textEditor); // a new line: its identifiers may need other definitions
        }
      }),
    );
  }

  /** codelsp/context a moment after the user settles on a line: the definitions that VS Code's
   *  language servers find for the identifiers near the cursor, when they changed. */
  private scheduleContext(editor: vscode.TextEditor | undefined): void {
    if (this.contextTimer) {
      clearTimeout(this.contextTimer);
    }
    this.contextTimer = setTimeout(() => {
      this.sendContext(editor).catch((error: unknown) =>
        this.output.warn(`${CONTEXT_NOTIFICATION}: ${error instanceof Error ? error.message : String(error)}`));
    }, 1500);
  }

  private async sendContext(editor: vscode.TextEditor | undefined): Promise<void> {
    const client = this.client;
    if (!client || !client.isRunning() || !editor || this.paused || editor.document.uri.scheme !== 'file') {
      return;
    }
    const doc = editor.document;
    const cursor = editor.selection.active;
    this.contextLine = cursor.line;
    const lines = doc.getText().split(/\r?\n/);
    const definitions: Definition[] = [];
    for (const spot of identifiersNear(lines, cursor.line, cursor.character)) {
      const found = await vscode.commands.executeCommand<(vscode.Location | vscode.LocationLink)[]>(
        'vscode.executeDefinitionProvider', doc.uri, new vscode.Position(spot.line, spot.character));
      for (const loc of found ?? []) {
        const uri = 'targetUri' in loc ? loc.targetUri : loc.uri;
        const range = 'targetUri' in loc ? (loc.targetSelectionRange ?? loc.targetRange) : loc.range;
        definitions.push({ uri: client.code2ProtocolConverter.asUri(uri), line: range.start.line });
      }
    }
    const files = new Map<string, readonly string[] | undefined>();
    for (const d of definitions) {
      if (!files.has(d.uri)) {
        try {
          const opened = await vscode.workspace.openTextDocument(vscode.Uri.parse(d.uri));
          files.set(d.uri, opened.getText().split(/\r?\n/));
        } catch {
          files.set(d.uri, undefined);
        }
      }
    }
    const current = client.code2ProtocolConverter.asUri(doc.uri);
    const params = contextParams(current, snippetsFor(definitions, current, (u) => files.get(u)), this.contextSent);
    if (params) {
      await client.sendNotification(CONTEXT_NOTIFICATION, params);
    }
  }

  // --- next edits (codelsp.nextEdit): a decoration, and a command to apply it ---------------
  private scheduleNextEdit(document: vscode.TextDocument): void {
    this.clearNextEdit();
    if (this.nextEditTimer) {
      clearTimeout(this.nextEditTimer);
    }
    if (!this.config().get<boolean>('nextEdit', false) || this.paused) {
      return;
    }
    this.nextEditTimer = setTimeout(() => void this.askNextEdit(document), NEXT_EDIT_DELAY_MS);
  }

  private async askNextEdit(document: vscode.TextDocument): Promise<void> {
    const client = this.client;
    const editor = vscode.window.activeTextEditor;
    if (!client || !client.isRunning() || !editor || editor.document !== document) {
      return;
    }
    const uri = client.code2ProtocolConverter.asUri(document.uri);
    const version = document.version;
    const { line, character } = editor.selection.active;
    let result: unknown;
    try {
      result = await client.sendRequest(NEXT_EDIT_REQUEST, nextEditParams(uri, version, line, character));
    } catch (error) {
      this.output.warn(`${NEXT_EDIT_REQUEST}: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    const edit = pickEdit(result, uri, version);
    if (!edit || document.version !== version || vscode.window.activeTextEditor !== editor) {
      return; // typed on meanwhile: its range is in an older version's coordinates
    }
    const r = edit.range;
    const range = new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character);
    editor.setDecorations(this.nextEditStyle, [{
      range,
      hoverMessage: `codelsp next edit: codelsp: Apply Next Edit`,
      renderOptions: { after: { contentText: decorationText(edit) } },
    }]);
    this.nextEdit = { edit, editor };
    if (edit.command) {
      void client.sendNotification(SHOWN_NOTIFICATION, { item: { command: edit.command } });
    }
  }

  private clearNextEdit(): void {
    if (this.nextEdit) {
      this.nextEdit.editor.setDecorations(this.nextEditStyle, []);
      this.nextEdit = undefined;
    }
  }

  private async applyNextEdit(): Promise<void> {
    const shown = this.nextEdit;
    if (!shown) {
      void vscode.window.showInformationMessage('codelsp: no next edit shown');
      return;
    }
    const { edit, editor } = shown;
    if (editor.document.version !== edit.textDocument.version) {
      this.clearNextEdit();
      return;
    }
    const r = edit.range;
    const range = new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character);
    this.clearNextEdit();
    editor.selection = new vscode.Selection(range.start, range.start);
    editor.revealRange(range);
    if (await editor.edit((b) => b.replace(range, edit.text)) && edit.command && this.client) {
      void this.client.sendRequest(ExecuteCommandRequest.type, {
        command: edit.command.command, arguments: edit.command.arguments ?? [],
      }).catch(() => undefined);
    }
  }

  /** codelsp/didFocus for the editor now in front: the server warms that document at the cursor. */
  private sendFocus(editor: vscode.TextEditor | undefined): void {
    const client = this.client;
    if (!client || !client.isRunning()) {
      return;
    }
    const params = focusParams(editor, this.paused, (uri) => client.code2ProtocolConverter.asUri(uri));
    if (params) {
      client.sendNotification(FOCUS_NOTIFICATION, params).catch((error: unknown) =>
        this.output.warn(`${FOCUS_NOTIFICATION}: ${error instanceof Error ? error.message : String(error)}`));
    }
  }

  // --- settings -------------------------------------------------------------------------
  private config(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration('codelsp');
  }

  private workspaceFolder(): string | undefined {
    return vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  }

  /** The server's settings as they are now (initializationOptions and didChangeConfiguration). */
  private settings(): Record<string, unknown> {
    const cfg = this.config();
    return serverSettings((key: ServerKey) => cfg.get(key), { home: os.homedir(), workspaceFolder: this.workspaceFolder() });
  }

  private command(): ServerCommand {
    const cfg = this.config();
    return serverCommand(
      { command: cfg.get('server.command'), args: cfg.get('server.args'), pythonPath: cfg.get('server.pythonPath') },
      os.homedir(),
      this.workspaceFolder(),
    );
  }

  private async onConfigurationChanged(e: vscode.ConfigurationChangeEvent): Promise<void> {
    if (!e.affectsConfiguration('codelsp')) {
      return;
    }
    if (JSON.stringify(this.command()) !== this.lastCommand) {
      this.output.info('codelsp.server.* changed: restarting the server');
      await this.restart();
      return;
    }
    if (!SERVER_KEYS.some((k) => e.affectsConfiguration(`codelsp.${k}`))) {
      return;
    }
    const settings = this.settings();
    if (!this.client || !this.client.isRunning()) {
      return; // the next start sends them as initializationOptions
    }
    // The server reloads the model when a setting that shapes it changed, and reports that
    // through codelsp/status (loading, then ready or error).
    await this.client.sendNotification(DidChangeConfigurationNotification.type, { settings: { codelsp: settings } });
  }

  // --- the server -----------------------------------------------------------------------
  start(): Promise<void> {
    if (!this.starting) {
      this.starting = this.doStart().finally(() => {
        this.starting = undefined;
      });
    }
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const sc = this.command();
    this.lastCommand = JSON.stringify(sc);
    const program = findExecutable(sc.command, process.env, { cwd: this.workspaceFolder() ?? os.homedir() });
    if (!program) {
      const message = notFoundMessage(sc);
      this.output.error(message);
      this.setState({ kind: 'notFound', message });
      void this.showNotFound(message, sc);
      return;
    }
    const serverOptions: ServerOptions = { command: program, args: sc.args, options: { cwd: this.workspaceFolder() } };
    const gate = { isPaused: () => this.paused, completionMenu: () => this.config().get<boolean>('completionMenu', false) };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      initializationOptions: () => this.settings(),
      outputChannel: this.output,
      stdioOptions: {
        stdout: (input, channel) => {
          readline.createInterface({ input, crlfDelay: Infinity, terminal: false }).on('line', (l) => channel.info(l));
        },
        stderr: (input, channel) => {
          readline.createInterface({ input, crlfDelay: Infinity, terminal: false }).on('line', (l) => channel[stderrLevel(l)](l));
        },
      },
      middleware: {
        ...completionMiddleware(gate),
        workspace: {
          configuration: async (params, token, next) => {
            const raw = await next(params, token);
            return answerConfiguration(params.items, () => this.settings(), Array.isArray(raw) ? raw : []);
          },
        },
      },
    };
    const client = new LanguageClient('codelsp', 'codelsp', serverOptions, clientOptions);
    this.client = client;
    client.onNotification(STATUS_NOTIFICATION, (params: unknown) => {
      const state = parseStatus(params);
      if (state) {
        this.setState(state);
      } else {
        this.output.warn(`ignored ${STATUS_NOTIFICATION} notification: ${JSON.stringify(params)}`);
      }
    });
    client.onDidChangeState((e) => {
      if (e.newState === State.Stopped && this.client === client && this.state.kind !== 'notFound') {
        this.setState({ kind: 'stopped', message: 'the server stopped; codelsp: Restart Server starts it again' });
      }
    });
    this.setState({ kind: 'starting', message: [program, ...sc.args].join(' ') });
    try {
      await client.start();
    } catch (error) {
      const message = startFailedMessage(sc, error);
      this.output.error(message);
      this.setState({ kind: 'error', message });
      void vscode.window.showErrorMessage(message, 'Show Log').then((pick) => pick && this.output.show(true));
      return;
    }
    // The model loads in the background: codelsp/status says loading, ready or error, and VS Code
    // shows the server's $/progress (model load, code actions) on its own.
    if (this.state.kind === 'starting') {
      this.setState({ kind: 'loading', message: 'loading the model' });
    }
    this.sendFocus(vscode.window.activeTextEditor); // the editor already in front when the server starts
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) {
      try {
        await client.stop(5000);
      } catch (error) {
        this.output.warn(`stopping the server: ${error instanceof Error ? error.message : String(error)}`);
      }
      await client.dispose();
    }
  }

  async restart(): Promise<void> {
    await this.starting;
    await this.stop();
    await this.start();
  }

  private async showNotFound(message: string, sc: ServerCommand): Promise<void> {
    const pick = await vscode.window.showErrorMessage(message, 'Open README', 'Open Settings');
    if (pick === 'Open README') {
      const readme = vscode.Uri.joinPath(this.context.extensionUri, 'README.md');
      await vscode.commands.executeCommand('markdown.showPreview', readme);
    } else if (pick === 'Open Settings') {
      await vscode.commands.executeCommand('workbench.action.openSettings', sc.setting);
    }
  }

  // --- status bar and pause -------------------------------------------------------------
  private setState(state: ModelState): void {
    this.state = state;
    this.render();
  }

  private render(): void {
    const view = statusView(this.state, this.paused);
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.accessibilityInformation = { label: view.label };
    this.item.backgroundColor = view.background ? new vscode.ThemeColor(view.background) : undefined;
  }

  private async togglePause(): Promise<void> {
    this.paused = !this.paused;
    await this.context.globalState.update(PAUSED_KEY, this.paused);
    await vscode.commands.executeCommand('setContext', 'codelsp.paused', this.paused);
    this.render();
    vscode.window.setStatusBarMessage(this.paused ? 'codelsp: completions paused' : 'codelsp: completions on', 3000);
  }

  private async menu(): Promise<void> {
    const items: (vscode.QuickPickItem & { command: string })[] = [
      { label: this.paused ? '$(play) Resume completions' : '$(debug-pause) Pause completions', command: COMMANDS.togglePause },
      { label: '$(output) Show log', command: COMMANDS.showLog },
      { label: '$(debug-restart) Restart server', command: COMMANDS.restartServer },
      { label: '$(gear) Settings', command: 'workbench.action.openSettings' },
    ];
    const pick = await vscode.window.showQuickPick(items, { title: statusView(this.state, this.paused).tooltip.split('\n')[0] });
    if (pick) {
      await vscode.commands.executeCommand(pick.command, ...(pick.command === 'workbench.action.openSettings' ? ['codelsp'] : []));
    }
  }

  // --- commands that ask the server -----------------------------------------------------
  private runningClient(): LanguageClient | undefined {
    if (this.client && this.client.isRunning()) {
      return this.client;
    }
    void vscode.window.showErrorMessage('codelsp: the server is not running (codelsp: Restart Server, or see the log).', 'Show Log')
      .then((pick) => pick && this.output.show(true));
    return undefined;
  }

  private async showExplanation(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const client = this.runningClient();
    if (!editor || !client) {
      return;
    }
    const doc = editor.document;
    const params = explainParams(
      client.code2ProtocolConverter.asUri(doc.uri),
      client.code2ProtocolConverter.asRange(editor.selection),
    );
    const result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: 'codelsp: explaining…', cancellable: true },
      (_progress, token) => client.sendRequest(ExecuteCommandRequest.type, params, token),
    );
    const parsed = parseExplainResult(result);
    if (!parsed.ok) {
      void vscode.window.showErrorMessage(parsed.error);
      return;
    }
    let body: string;
    try {
      body = await vscode.commands.executeCommand<string>('markdown.api.render', parsed.value.markdown);
    } catch {
      body = markdownAsPre(parsed.value.markdown);
    }
    const name = doc.uri.path.split('/').pop() ?? doc.uri.toString();
    const lines = editor.selection.isEmpty ? `line ${editor.selection.active.line + 1}`
      : `lines ${editor.selection.start.line + 1}–${editor.selection.end.line + 1}`;
    const title = `Explanation: ${name}, ${lines}`;
    if (!this.explainPanel) {
      this.explainPanel = vscode.window.createWebviewPanel('codelsp.explanation', title,
        { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true }, { enableScripts: false });
      this.explainPanel.onDidDispose(() => {
        this.explainPanel = undefined;
      });
    }
    this.explainPanel.title = title;
    this.explainPanel.webview.html = explanationHtml(body, title, this.explainPanel.webview.cspSource);
    this.explainPanel.reveal(vscode.ViewColumn.Beside, true);
  }

  private async writeFunction(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const client = this.runningClient();
    if (!editor || !client) {
      return;
    }
    const params = writeFunctionParams(
      client.code2ProtocolConverter.asUri(editor.document.uri),
      client.code2ProtocolConverter.asPosition(editor.selection.active),
    );
    const result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: 'codelsp: writing the function…', cancellable: true },
      (_progress, token) => client.sendRequest(ExecuteCommandRequest.type, params, token),
    );
    const parsed = parseWriteResult(result);
    if (!parsed.ok) {
      void vscode.window.showErrorMessage(parsed.error);
    } else if (!parsed.value.applied) {
      void vscode.window.showWarningMessage(parsed.value.message || 'codelsp: nothing was written.');
    }
  }

  async dispose(): Promise<void> {
    this.explainPanel?.dispose();
    await this.stop();
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}

let extension: CodelspExtension | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  extension = new CodelspExtension(context);
  await vscode.commands.executeCommand('setContext', 'codelsp.paused', context.globalState.get<boolean>(PAUSED_KEY, false));
  await extension.start();
}

export async function deactivate(): Promise<void> {
  const ext = extension;
  extension = undefined;
  await ext?.dispose();
}
