"""The Flask app (WSGI) under the ASGI server, in a pool of ``threads`` handler threads.

The event loop reads each request's body, every part within ``client_timeout``, into a spooled
file (on disk past 512 kB) before a handler thread sees the request: a client that stalls
mid-upload holds a socket, never a thread, so reads (``/healthz``) always find one. A body over
``max_upload_bytes`` is not read: the app sees its length and answers 413. A client that leaves is
noticed at the next part of its response, whose iterator is then closed (a stream gives back its
lease); one that stops reading for ``client_timeout`` is left the same way.

Why not a2wsgi or uvicorn's own WSGI: neither notices a client that leaves a stream, and both
hand a handler thread a body still arriving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import IO, Any

from edge_asr.server.errors import error_json

log = logging.getLogger(__name__)
SPOOL_BYTES = 512 * 1024
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]


class ClientGone(Exception):
    """The client stalled (sending its body or reading the response) or left."""


class WsgiBridge:
    def __init__(self, app: Callable, threads: int, client_timeout: float, max_body: int):
        self.app, self.client_timeout, self.max_body = app, client_timeout, max_body
        self.executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="edge-asr-http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body, size = await self._read_body(scope, receive)
        except ClientGone:
            await send_error(send, 408, "the request body did not arrive in time (client_timeout)", "request_timeout")
            return
        left = threading.Event()
        watcher = asyncio.create_task(_watch(receive, left))
        try:
            environ = wsgi_environ(scope, body, size)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.executor, self._respond, environ, send, loop, left)
        finally:
            watcher.cancel()
            body.close()

    async def call(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """(For a WebSocket upgrade's checks.) The app's whole answer to a request without a body."""
        answer: list[Any] = []

        def run() -> tuple[int, list[tuple[str, str]], bytes]:
            chunks = self.app(environ, lambda status, headers, exc_info=None: answer.extend((status, headers)))
            try:
                content = b"".join(chunks)
            finally:
                getattr(chunks, "close", lambda: None)()
            return int(answer[0].split()[0]), answer[1], content

        return await asyncio.get_running_loop().run_in_executor(self.executor, run)

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[IO[bytes], int]:
        """The body, spooled; only its declared length when that is over ``max_body`` (unread)."""
        body = tempfile.SpooledTemporaryFile(SPOOL_BYTES)  # noqa: SIM115 - the caller closes it
        declared = int(dict(scope["headers"]).get(b"content-length", b"0") or 0)
        if declared > self.max_body:
            return body, declared
        size, more = 0, True
        try:
            while more and size <= self.max_body:
                try:
                    message = await asyncio.wait_for(receive(), self.client_timeout)
                except asyncio.TimeoutError:
                    raise ClientGone from None
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                body.write(chunk)
                size += len(chunk)
                more = message.get("more_body", False)
        except BaseException:
            body.close()
            raise
        body.seek(0)
        return body, size

    def _respond(
        self, environ: dict[str, Any], send: Send, loop: asyncio.AbstractEventLoop, left: threading.Event
    ) -> None:
        """(In a handler thread.) Run the app and send its answer part by part."""
        head: list[Message] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            head[:] = [{"type": "http.response.start", "status": int(status.split()[0]), "headers": encoded(headers)}]

        def emit(message: Message) -> None:
            if left.is_set():
                raise ClientGone
            outbox.put(message)

        outbox = Outbox(send, loop, self.client_timeout)
        chunks: Iterable[bytes] = ()
        try:
            chunks = self.app(environ, start_response)
            started = False
            for chunk in chunks:
                if not chunk:
                    continue
                if not started:
                    emit(head[0])
                    started = True
                emit({"type": "http.response.body", "body": chunk, "more_body": True})
            if not started:
                emit(head[0])
            # not emit(): a client that closes once it has the whole body has not left it
            outbox.put({"type": "http.response.body", "body": b"", "more_body": False})
            outbox.finish()
        except ClientGone:
            log.info("a client left (or stopped reading) %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
        except BaseException:
            outbox.flush()  # what the app made before it failed reaches the client; then the connection closes
            raise
        finally:
            outbox.abandon()
            getattr(chunks, "close", lambda: None)()


class Outbox:
    """(Made and fed in a handler thread.) A response's parts, sent in order by one task on the
    event loop. The handler does not wait for each part to be sent: waking its thread for every
    part was most of the front's CPU on a token stream. It waits only while ``DEPTH`` parts are
    unsent (a client that stops reading holds it there, at most ``timeout``) and at the end (the
    last parts, together, within ``timeout``). Body parts that wait together go out in one write."""

    DEPTH = 16

    def __init__(self, send: Send, loop: asyncio.AbstractEventLoop, timeout: float):
        self.send, self.loop, self.timeout = send, loop, timeout
        self.changed = threading.Condition()  # guards the two below
        self.unsent, self.stopped = 0, False
        self.failure: BaseException | None = None  # what ended the sending early
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()  # None: send no more
        self.sending = asyncio.run_coroutine_threadsafe(self._send_all(), loop)

    def put(self, message: Message) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: self.unsent < self.DEPTH or self.stopped, self.timeout):
                raise ClientGone
            if self.stopped:
                raise self.failure if isinstance(self.failure, Exception) else ClientGone()
            self.unsent += 1
        self.loop.call_soon_threadsafe(self.queue.put_nowait, message)

    def finish(self) -> None:
        """Wait until the last part is sent."""
        try:
            self.sending.result(self.timeout)
        except concurrent.futures.TimeoutError:  # not the builtin one on Python 3.10
            raise ClientGone from None

    def flush(self) -> None:
        """Send what was put, then stop (waiting for it at most ``timeout``)."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)
        with contextlib.suppress(Exception, concurrent.futures.CancelledError):
            self.sending.result(self.timeout)

    def abandon(self) -> None:
        """Stop sending (what is unsent is dropped); nothing once all is sent."""
        self.sending.cancel()

    async def _send_all(self) -> None:
        try:
            more = True
            while more and (message := await self.queue.get()) is not None:
                parts = 1
                while message["type"] == "http.response.body" and message["more_body"] and not self.queue.empty():
                    following = self.queue.get_nowait()
                    if following is None:  # the last to come: it stops the sending after this part
                        self.queue.put_nowait(None)
                        break
                    message = {**following, "body": message["body"] + following["body"]}
                    parts += 1
                await self.send(message)
                more = message["type"] == "http.response.start" or message["more_body"]
                with self.changed:
                    self.unsent -= parts
                    self.changed.notify()
        except BaseException as e:
            self.failure = e
            raise
        finally:
            with self.changed:
                self.stopped = True
                self.changed.notify_all()


async def _watch(receive: Receive, left: threading.Event) -> None:
    """Sets ``left`` when the client disconnects (the body is read: only that comes now)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    left.set()


def encoded(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def send_error(send: Send, status: int, message: str, code: str) -> None:
    body = error_json(message, "invalid_request_error" if status < 500 else "server_error", code)
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")]
    await send({"type": "http.response.start", "status": status, "headers": encoded(headers)})
    await send({"type": "http.response.body", "body": body})


def wsgi_environ(scope: Scope, body: IO[bytes], size: int) -> dict[str, Any]:
    """PEP 3333's environ for an ASGI ``http`` (or ``websocket``: a GET) scope."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.get("method", "GET"),
        "SCRIPT_NAME": scope.get("root_path", "").encode().decode("latin-1"),
        "PATH_INFO": scope["path"].encode().decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "CONTENT_LENGTH": str(size),
        "wsgi.input_terminated": True,  # the body is whole (de-chunked): read it to its end
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http")),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").upper().replace("-", "_"), raw_value.decode("latin-1")
        if name == "CONTENT_TYPE":
            environ[name] = value
        elif name not in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):  # the body is spooled whole
            key = f"HTTP_{name}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ
