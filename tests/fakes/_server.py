"""A loopback HTTP server for fake provider APIs: routing, request recording and fault injection.

The provider fakes (``openai_fake``, ``together_fake``) subclass ``LoopbackServer`` and register
their routes; the real SDKs talk to it over a real socket on 127.0.0.1 and an ephemeral port.

Faults are programmable per route and per call (``server.faults``):

- an HTTP error (429 with ``Retry-After``, 500, 503, ...) answered instead of the real answer;
- a dropped connection: the socket is closed without a response;
- a timeout: the answer is held back until the client gives up waiting (see below);
- each of them either before the handler runs (nothing happened on the server) or after it
  (``commit=True``: the change happened, but the client never learns so) -- the case that makes
  naive retries of a create submit twice.

Time is never the machine's: jobs advance only when a test says so (or one step per poll, see the
fakes), and a timeout does not wait for a clock. A held answer is sent marked (``HELD_HEADER``) and the
client's HTTP transport, while a fake runs, gives up on it at once with the ``httpx.ReadTimeout`` its
own timeout would raise. So the client's timeouts can stay long (no ordinary call on a loaded machine
runs out of time), a faulted call times out whatever its timeout, and by the time the client sees it
the server has done (``commit``) or not done the work: nothing to wait for before asserting on it.

``hold(route)`` is the other tool for races: the route's calls wait at a gate, each counted, until the
test opens it (e.g. when every concurrent client has either reached the gate or finished).
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Fault:
    """What goes wrong with one call. Build one with the class methods."""

    kind: str  # "status" | "drop" | "timeout"
    status: int = 0
    retry_after: float | None = None
    commit: bool = False  # run the real handler first: the server-side change happens

    @classmethod
    def rate_limited(cls, retry_after: float = 1.0) -> Fault:
        return cls("status", status=429, retry_after=retry_after)

    @classmethod
    def error(cls, status: int = 500, *, retry_after: float | None = None, commit: bool = False) -> Fault:
        return cls("status", status=status, retry_after=retry_after, commit=commit)

    @classmethod
    def unavailable(cls, retry_after: float | None = None) -> Fault:
        return cls("status", status=503, retry_after=retry_after)

    @classmethod
    def dropped(cls, *, commit: bool = False) -> Fault:
        return cls("drop", commit=commit)

    @classmethod
    def timed_out(cls, *, commit: bool = True) -> Fault:
        """The answer never comes: the client's read times out (after the work was done, with ``commit``)."""
        return cls("timeout", commit=commit)

    @classmethod
    def committed_error(cls, status: int = 500) -> Fault:
        """The nasty one: the server does the work, then answers an error."""
        return cls("status", status=status, commit=True)

    def __str__(self) -> str:
        what = {"status": f"HTTP {self.status}", "drop": "dropped connection", "timeout": "client timed out"}
        return what[self.kind] + (" after commit" if self.commit else "")


#: A representative mix for random fault injection: every kind, including the committed ones.
ALL_FAULTS: tuple[Fault, ...] = (
    Fault.rate_limited(retry_after=0.01),
    Fault.error(500),
    Fault.unavailable(),
    Fault.dropped(),
    Fault.committed_error(500),
    Fault.dropped(commit=True),
    Fault.timed_out(commit=False),
    Fault.timed_out(),
)

#: The header of an answer the client must not get: it stands for one held until the client gave up.
HELD_HEADER = "x-fake-held"


class FaultPlan:
    """Which calls fail, and how: queued per route, pinned to the n-th call, or at random (seeded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[str, deque[Fault]] = defaultdict(deque)
        self._pinned: dict[tuple[str, int], Fault] = {}
        self._calls: Counter[str] = Counter()
        self._rate = 0.0
        self._mix: Sequence[Fault] = ()
        self._routes: frozenset[str] | None = None
        self._rng = random.Random(0)
        self.injected: Counter[str] = Counter()  # str(fault) -> how many times it was injected

    def on(self, route: str, fault: Fault, times: int = 1) -> FaultPlan:
        """The next ``times`` calls of ``route`` get ``fault``."""
        with self._lock:
            self._queued[route].extend([fault] * times)
        return self

    def at(self, route: str, call: int, fault: Fault) -> FaultPlan:
        """The ``call``-th call (1-based, counted from the start) of ``route`` gets ``fault``."""
        with self._lock:
            self._pinned[(route, call)] = fault
        return self

    def random(self, rate: float, mix: Sequence[Fault] = ALL_FAULTS, *, seed: int = 0,
               routes: Iterable[str] | None = None) -> FaultPlan:
        """Each call of ``routes`` (default: every route) fails with probability ``rate``."""
        with self._lock:
            self._rate, self._mix, self._rng = rate, tuple(mix), random.Random(seed)
            self._routes = frozenset(routes) if routes is not None else None
        return self

    def clear(self) -> None:
        with self._lock:
            self._queued.clear()
            self._pinned.clear()
            self._rate = 0.0

    def calls(self, route: str) -> int:
        return self._calls[route]

    def pick(self, route: str) -> Fault | None:
        with self._lock:
            self._calls[route] += 1
            fault = self._pinned.pop((route, self._calls[route]), None)
            if fault is None and self._queued[route]:
                fault = self._queued[route].popleft()
            if (fault is None and self._rate and (self._routes is None or route in self._routes)
                    and self._rng.random() < self._rate):
                fault = self._rng.choice(self._mix)
            if fault is not None:
                self.injected[str(fault)] += 1
            return fault


class Gate:
    """Calls of one route wait here until the test opens it; ``arrived`` counts them (see ``hold``)."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._arrival = threading.Condition()
        self.arrived = 0

    def pass_through(self) -> None:
        with self._arrival:
            self.arrived += 1
            self._arrival.notify_all()
        self._open.wait()

    def wait_arrived(self, n: int, timeout: float = 30.0) -> bool:
        """Whether ``n`` calls arrived within ``timeout`` seconds (woken by each arrival, not polling)."""
        with self._arrival:
            return self._arrival.wait_for(lambda: self.arrived >= n, timeout)

    def open(self) -> None:
        self._open.set()


class _ClientGivesUp:
    """While a fake runs, the SDKs' HTTP transport (httpx; httpx2, the fork the openai SDK 3 uses) turns a held answer
    (``HELD_HEADER``) into the ``ReadTimeout`` the client's own timeout would raise: the client gives up when the fake
    holds the answer, not after a wait."""

    _lock = threading.Lock()
    _users = 0
    _originals: ClassVar[dict[Any, Callable[..., Any]]] = {}

    @classmethod
    def acquire(cls) -> None:
        with cls._lock:
            cls._users += 1
            if cls._users > 1:
                return
            for http in _http_libraries():
                original = cls._originals[http] = http.HTTPTransport.handle_request
                http.HTTPTransport.handle_request = _giving_up(http, original)

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._users -= 1
            if cls._users == 0:
                for http, original in cls._originals.items():
                    http.HTTPTransport.handle_request = original
                cls._originals.clear()


def _http_libraries() -> list[Any]:
    import importlib

    found = []
    for name in ("httpx", "httpx2"):
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            continue
    return found


def _giving_up(http: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    def handle_request(transport: Any, request: Any) -> Any:
        response = original(transport, request)
        if HELD_HEADER in response.headers:
            response.read()
            response.close()
            raise http.ReadTimeout("timed out (the fake held its answer)", request=request)
        return response

    return handle_request


@dataclass
class Request:
    """One request as the server saw it: what handlers read and what ``requests`` records."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    route: str
    fault: Fault | None
    params: dict[str, str]  # named groups of the route pattern

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def form(self) -> dict[str, tuple[str | None, bytes]]:
        """A multipart/form-data body as {field: (filename or None, bytes)}."""
        head = f"Content-Type: {self.headers.get('content-type', '')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + self.body)
        parts: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            parts[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
        return parts


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})


Handler = Callable[[Request], Response]


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1:<ephemeral>; subclasses add routes with ``route()``."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], str, Handler]] = []
        self.requests: list[Request] = []
        self.faults = FaultPlan()
        self.lock = threading.RLock()  # guards the fake's state; handlers run under it
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._clients: list[Any] = []  # SDK clients handed out by ``client()``: closed on stop()
        self._gates: dict[str, Gate] = {}

    def _hand_out(self, client: Any) -> Any:
        self._clients.append(client)
        return client

    # -- set-up ---------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, name: str, handler: Handler) -> None:
        """``pattern`` is a path with ``{name}`` placeholders for one path segment each."""
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self._routes.append((method, re.compile(f"^{regex}$"), name, handler))

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """The provider's error envelope; subclasses override."""
        return {"error": {"message": message, "type": "error", "param": None, "code": None}}

    def hold(self, route: str) -> Gate:
        """From now on, calls of ``route`` wait at a new gate until it is opened (``stop()`` opens it too)."""
        gate = self._gates[route] = Gate()
        return gate

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # one buffered write per answer, no Nagle: else every call waits ~40 ms for a delayed ACK
            wbufsize = 1 << 16
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def _serve(self) -> None:
                server._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        _ClientGivesUp.acquire()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), name=type(self).__name__,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for gate in self._gates.values():
            gate.open()
        for client in self._clients:
            client.close()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
            _ClientGivesUp.release()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- assertions helpers ---------------------------------------------------------------------
    def calls(self, route: str) -> list[Request]:
        return [r for r in self.requests if r.route == route]

    # -- serving --------------------------------------------------------------------------------
    def _dispatch(self, http: BaseHTTPRequestHandler) -> None:
        split = urlsplit(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in http.headers.items()}
        found = next(((name, handler, match) for method, regex, name, handler in self._routes
                      if method == http.command and (match := regex.match(split.path))), None)
        if found is None:
            self._send(http, Response.json(self.error_body(404, f"no route {http.command} {split.path}"), 404))
            return
        name, handler, match = found
        fault = self.faults.pick(name)
        request = Request(http.command, split.path, parse_qs(split.query, keep_blank_values=True), headers, body,
                          name, fault, match.groupdict())
        with self.lock:
            self.requests.append(request)

        gate = self._gates.get(name)
        if gate is not None:
            gate.pass_through()
            if self._stopping.is_set():
                return
        if fault is None:
            self._send(http, self._run(handler, request))
            return
        if fault.commit:
            self._run(handler, request)
        if fault.kind == "drop":
            http.close_connection = True
            http.connection.close()
        elif fault.kind == "timeout":  # a client that gave up drops the connection: so does this one
            http.close_connection = True
            self._send(http, Response(504, b"", {HELD_HEADER: "1", "Connection": "close"}))
        else:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            message = {429: "Rate limit reached, retry later", 503: "Service unavailable"}.get(
                fault.status, "The server had an error while processing your request")
            self._send(http, Response.json(self.error_body(fault.status, message), fault.status, headers))

    def _run(self, handler: Handler, request: Request) -> Response:
        with self.lock:
            try:
                return handler(request)
            except _HTTPError as err:
                return Response.json(self.error_body(err.status, err.message), err.status)

    @staticmethod
    def _send(http: BaseHTTPRequestHandler, response: Response) -> None:
        try:
            http.send_response(response.status)
            for key, value in response.headers.items():
                http.send_header(key, value)
            http.send_header("Content-Length", str(len(response.body)))
            http.end_headers()
            http.wfile.write(response.body)
            http.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            http.close_connection = True  # the client gave up (timed out); nothing to answer


class _HTTPError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


def http_error(status: int, message: str) -> _HTTPError:
    """Raise this from a handler to answer the provider's error envelope with ``status``."""
    return _HTTPError(status, message)


def bearer_auth(req: Request, rejected: set[str]) -> None:
    """401 without a key; a rejected key is echoed back in full (worse than the real API, which
    masks it) so that tests prove the broker scrubs keys out of provider messages."""
    auth = req.headers.get("authorization", "")
    key = auth.removeprefix("Bearer ").strip()
    if not auth.startswith("Bearer ") or not key:
        raise http_error(401, "You didn't provide an API key.")
    if key in rejected:
        raise http_error(401, f"Incorrect API key provided: {key}.")
