"""The LSP client the tools drive `codelsp serve` with (bench replays, editing replay, eval).

One place for what each of them needs around its requests: the server started over stdio as
`python -m codelsp serve <args>`, initialized with no client capabilities (plain-text inline
completion), its log and status notifications ignored, its stderr read all along (pygls gives
the process a pipe there and never reads it: once the pipe's 64 KiB were full, the server would
block at its next log line) and its last lines shown if the server dies; a clean
shutdown, or on an error the process terminated (pygls's stop() alone would wait for it forever).
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from lsprotocol import types


def inline_params(uri: str, line: int, character: int) -> types.InlineCompletionParams:
    """`textDocument/inlineCompletion` params as an editor sends them while you type (automatic
    trigger) at zero-based `line` and UTF-16 `character`."""
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )


def inline_texts(result: Any) -> list[str]:
    """The texts of a `textDocument/inlineCompletion` answer (a list or an InlineCompletionList;
    snippet items give their snippet text), best first; [] for no answer."""
    items = result.items if result is not None and not isinstance(result, list) else (result or [])
    return [item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value for item in items]


def as_dict(obj: Any) -> dict[str, Any]:
    """A JSON object of a custom answer (`codelsp/stats`): pygls hands it over as a namedtuple-like
    object."""
    return obj._asdict() if hasattr(obj, "_asdict") else dict(obj)


@asynccontextmanager
async def codelsp_client(
    server_args: list[str],
    *,
    name: str = "codelsp-bench",
    env: dict[str, str] | None = None,
    on_show: Callable[[types.ShowMessageParams], None] | None = None,
    root_uri: str | None = None,
) -> AsyncIterator[Any]:
    """An initialized pygls `LanguageClient` talking to a `codelsp serve` subprocess.

    `env` is added to this process's environment. `window/showMessage` goes to `on_show`, else to
    stderr as "<name>: server says: ...". `root_uri`: the workspace (rootUri and the one workspace
    folder sent with initialize; none by default). Leaving the block normally shuts the server down
    (shutdown + exit); an exception only stops it.
    """
    from pygls.lsp.client import LanguageClient

    client = LanguageClient(name, "1")

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def _log(params: types.LogMessageParams) -> None:  # the server's own stderr has them too
        pass

    @client.feature("codelsp/status")
    def _status(params: Any) -> None:  # for status bars; the tools have none
        pass

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def _show(params: types.ShowMessageParams) -> None:
        if on_show is not None:
            on_show(params)
        else:
            print(f"{name}: server says: {params.message}", file=sys.stderr)

    await client.start_io(sys.executable, "-m", "codelsp", "serve", *server_args, env={**os.environ, **(env or {})})
    tail: collections.deque[str] = collections.deque(maxlen=40)
    stderr = getattr(getattr(client, "_server", None), "stderr", None)

    async def drain() -> None:
        while stderr is not None:
            line = await stderr.readline()
            if not line:
                return
            tail.append(line.decode("utf-8", "replace").rstrip("\n"))

    reader = asyncio.create_task(drain())
    try:
        folders = [types.WorkspaceFolder(uri=root_uri, name=root_uri.rstrip("/").rsplit("/", 1)[-1])] if root_uri else None
        await client.initialize_async(types.InitializeParams(capabilities=types.ClientCapabilities(), process_id=os.getpid(),
                                                             root_uri=root_uri, workspace_folders=folders))
        client.initialized(types.InitializedParams())
        yield client
        await client.shutdown_async(None)
        client.exit(None)
    except BaseException:
        server = getattr(client, "_server", None)
        if tail and server is not None and server.returncode is not None:  # it died: say why
            print(f"{name}: the server exited; its last log lines:", *tail, sep="\n  ", file=sys.stderr)
        if server is not None and server.returncode is None:
            # no shutdown was sent: client.stop() would wait for an exit that never comes
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), 10)
            except asyncio.TimeoutError:
                server.kill()
        raise
    finally:
        await client.stop()
        reader.cancel()
