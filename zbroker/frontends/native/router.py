"""The native router: one table of request types, one place that runs every request.

A broker runs two routers over one table: one for the client ROUTER (``port``) and one
for the inter-broker ROUTER (``peer_port``, ``peer=True``), where only brokers get in
(their CURVE keys, :mod:`zbroker.net.zap`).  For each message, :meth:`NativeRouter.handle`:

1. decodes frame 0 (:func:`zbroker.protocol.decode_header`) -- garbage without a
   correlation id is dropped and logged, there is nobody to answer;
2. finds the route of the request type and checks the version against the route's
   range (UNSUPPORTED_VERSION), then every field against the type's schema
   (INVALID_REQUEST naming the field);
3. builds the :class:`RequestContext`: the principal is the one the listener proved (the
   connection's ZAP User-Id: ``User:NAME`` for a client key, ``Broker:N`` for a broker
   key), ``User:ANONYMOUS`` without one -- never the routing id, which the sender chooses;
4. authorizes: a broker-to-broker request (:attr:`Route.sender`) is served only on the
   inter-broker router and only from the broker it names; on the client router it is
   answered CLUSTER_AUTHORIZATION_FAILED, whoever asks.  Every route names the resources it
   touches, and the authorizer is asked for each: a refusal fails the request with Kafka's
   code for the resource (TOPIC_/GROUP_/CLUSTER_AUTHORIZATION_FAILED), except for the
   resource types the route answers one by one (:attr:`Route.per_resource`), which the
   handler gets in :attr:`RequestContext.refused`;
5. runs the handler, which calls a service with typed arguments;
6. answers: the handler's typed result is encoded by the route; a
   :class:`zbroker.context.Completion` is answered when it settles; a
   :class:`zbroker.errors.RequestError` becomes an error reply with its code; any other
   exception is logged with its traceback and answered UNKNOWN_SERVER_ERROR;
7. records the request's count, error and latency in the metrics registry.

Quotas and limits (``zbroker.security.quotas``): a produce or consumer fetch is recorded
against its principal's byte-rate quota, and its answer carries ``throttle_time_ms``; a
throttled answer is held back that long (parked in the purgatory; a ROUTER cannot stop
reading one peer, so the delay is what slows the client).  A connection that is owed
``max_in_flight_per_connection`` answers (parked requests, held-back answers) has its next
request refused with THROTTLING_QUOTA_EXCEEDED (retriable), brokers excepted.

Adding a request type is one handler plus one :class:`Route` in a handler module's
``ROUTES``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

from zbroker import protocol as P
from zbroker.context import ANONYMOUS, Completion, RequestContext
from zbroker.errors import ErrorCode, RequestError
from zbroker.metrics import RequestMetrics
from zbroker.ratelimit import RateLimitedLog
from zbroker.security import AllowAll, Authorizer, Operation, Resource, ResourceType, check_access
from zbroker.security.quotas import FETCH, PRODUCE, InFlightLimit

log = logging.getLogger(__name__)

LISTENER = "native"  # the client ROUTER on `port`
PEER_LISTENER = "peer"  # the inter-broker ROUTER on `peer_port`
Frames = list[bytes]

#: A handler's answer meaning "send nothing" (acks=0 produce, one-way messages).
NO_REPLY = object()
#: :attr:`Route.sender`: any broker of the cluster may send this request.
ANY_BROKER = -1

def _no_fields(result: Any) -> tuple[dict, Frames]:
    return {}, []


@dataclass(frozen=True)
class Route:
    """One request type of the native protocol.

    Attributes:
        kind: the ``type`` string.
        call: ``call(app, ctx, fields, payloads, now_ms)`` -> a typed result, a
            Completion of one, or NO_REPLY.
        reply: ``reply(result) -> (response fields, payload frames)``.
        access: ``access(fields) -> [(Operation, Resource), ...]`` to authorize.
        versions: the protocol versions accepted, inclusive.
        sender: for broker-to-broker requests, ``sender(fields)`` names the broker the
            request must come from: a broker id, :data:`ANY_BROKER`, or None (anyone may
            send this one, e.g. a consumer's fetch).
        any_version: answer this type at any ``v``: outside ``versions`` the answer carries
            UNSUPPORTED_VERSION *and* the route's reply (Kafka's ApiVersions, KIP-511), so a
            client of another version learns what this broker speaks.
        per_resource: resource types whose refusals the handler answers one by one (in
            ``ctx.refused``) instead of the whole request failing.
        quota: :data:`~zbroker.security.quotas.PRODUCE` (the payload frames in) or
            :data:`~zbroker.security.quotas.FETCH` (the payload frames out) count against the
            principal's byte-rate quota; the answer carries ``throttle_time_ms``.
    """

    kind: str
    call: Callable[..., Any]
    reply: Callable[[Any], tuple[dict, Frames]] = _no_fields
    access: Callable[[dict], Iterable[tuple[Operation, Resource]]] = lambda fields: ()
    versions: tuple[int, int] = (1, 1)
    sender: Callable[[dict], int | None] | None = None
    any_version: bool = False
    per_resource: frozenset[ResourceType] = frozenset()
    quota: str | None = None


class NativeRouter:
    """Runs native requests against the services of ``app``; replies go to ``send(conn, frames)``."""

    def __init__(self, app, routes: Iterable[Route], authorizer: Authorizer, metrics: RequestMetrics,
                 send: Callable[[bytes, Frames], None], max_request_bytes: int, peer: bool = False) -> None:
        """``peer``: this router serves the inter-broker listener, whose every sender is a
        broker its listener authenticated; the client router never serves broker-only requests."""
        self.app = app
        self.peer = peer
        self.listener = PEER_LISTENER if peer else LISTENER
        self.table: dict[str, Route] = {}
        for route in routes:
            if route.kind in self.table:
                raise ValueError(f"two routes for request type {route.kind!r}")
            self.table[route.kind] = route
        self.authorizer = authorizer
        self._check_access = not isinstance(authorizer, AllowAll)  # no per-request resource lists for nothing
        self.metrics = metrics
        self.send = send
        self.max_request_bytes = max_request_bytes
        self.bad_input_log = RateLimitedLog(log, burst=10, window_s=10.0)  # per kind; the rest is counted
        self.in_flight = InFlightLimit(app.config.setting("max_in_flight_per_connection"))

    def handle(self, conn: bytes, frames: Frames, now_ms: int, principal: str | None = None) -> None:
        """Handle one message received from ``conn`` (its ZeroMQ routing id), sent by
        ``principal`` as its listener authenticated it (None: anonymous)."""
        started = time.perf_counter()
        try:
            header = P.decode_header(frames[0], self.max_request_bytes)
        except P.UndecodableFrame as exc:
            self.bad_input_log.log(now_ms / 1000, "undecodable", logging.WARNING, "dropped a message from peer=%s: %s",
                              P.clip(conn.hex()), exc)
            return
        cid = header["cid"]
        kind = header.get("type")
        route = self.table.get(kind) if isinstance(kind, str) else None
        # an unknown type is echoed only while short: the reply never costs more than the request
        reply_type = kind if isinstance(kind, str) and len(kind) <= P.MAX_ECHO_CHARS else "error"
        metric = route.kind if route is not None else "unknown"
        try:
            if route is None:
                self._check_version(header, (P.PROTOCOL_VERSION, P.PROTOCOL_VERSION))
                raise RequestError(ErrorCode.INVALID_REQUEST, f"unknown request type {P.clip(kind)}")
            refused = self._version_refusal(header, route)
            fields = P.check_fields(route.kind, header)
            ctx = RequestContext(principal or ANONYMOUS, self.listener, self._client_id(header), conn)
            ctx = self._authorize(ctx, route, fields)
            if self.in_flight.full(conn) and ctx.broker_id is None:
                raise RequestError(ErrorCode.THROTTLING_QUOTA_EXCEEDED,
                                   f"this connection is owed {self.in_flight.held(conn)} answers, the most "
                                   f"max_in_flight_per_connection allows: send more once some are answered")
            answer = route.call(self.app, ctx, fields, frames[1:], now_ms)
        except RequestError as exc:
            self.bad_input_log.log(now_ms / 1000, "bad_request", logging.WARNING, "bad request from peer=%s type=%s cid=%s: %s",
                              P.clip(conn.hex()), P.clip(kind), cid, P.clip_message(exc.message, 256))
            self._error(conn, reply_type, cid, exc.code, exc.message, metric, started)
            return
        except Exception as exc:  # a bug must not stop the broker
            log.exception("error handling type=%s cid=%s", P.clip(kind), cid)
            self._error(conn, reply_type, cid, ErrorCode.UNKNOWN_SERVER_ERROR, f"internal error: {exc!r}", metric, started)
            return
        throttle = None
        if route.quota is not None and self.app.quotas.enabled():
            throttle = _Throttle(ctx.principal, now_ms, fields["timeout_ms"] if route.quota == PRODUCE else None)
            if route.quota == PRODUCE:
                throttle.ms = self.app.quotas.record(PRODUCE, ctx.principal, sum(map(len, frames[1:])), now_ms)
        if answer is NO_REPLY:
            self.metrics.observe(self.listener, metric, time.perf_counter() - started)
        elif isinstance(answer, Completion):
            self.in_flight.acquire(conn)
            answer.on_done(lambda done: self._settled(conn, route, cid, done, started, refused, throttle))
        else:
            self._answer(conn, route, cid, answer, started, refused, throttle, now_ms=now_ms)

    # -- steps -------------------------------------------------------------------

    @staticmethod
    def _check_version(header: dict, versions: tuple[int, int]) -> None:
        version = header.get("v")
        # an integer: true or 1.0 is no version (the old check let them pass as equal to 1)
        if not (isinstance(version, int) and not isinstance(version, bool) and versions[0] <= version <= versions[1]):
            raise RequestError(ErrorCode.UNSUPPORTED_VERSION,
                               f"protocol version {P.clip(version)} not supported (this broker speaks {P.PROTOCOL_VERSION})")

    def _version_refusal(self, header: dict, route: Route) -> RequestError | None:
        """None if ``v`` is served; raises UNSUPPORTED_VERSION if not, unless the route is
        answered at any version: then the refusal is returned, to go with the answer."""
        try:
            self._check_version(header, route.versions)
        except RequestError as exc:
            if not route.any_version:
                raise
            return exc
        return None

    @staticmethod
    def _client_id(header: dict) -> str:
        """The optional ``client_id`` of any request header: a short string."""
        client_id = header.get("client_id")
        if client_id is None:
            return ""
        if not isinstance(client_id, str) or len(client_id) > P.MAX_ID_CHARS:
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               f"field 'client_id' must be a string of at most {P.MAX_ID_CHARS} chars, got {P.clip(client_id)}")
        return client_id

    def refuse(self, conn: bytes, frames: Frames, now_ms: int, code: ErrorCode, message: str) -> None:
        """Answer a message with an error without running it (its sender's key is no
        longer admitted); garbage without a correlation id is dropped, as in :meth:`handle`."""
        started = time.perf_counter()
        try:
            header = P.decode_header(frames[0], self.max_request_bytes)
        except P.UndecodableFrame:
            return
        kind = header.get("type")
        reply_type = kind if isinstance(kind, str) and len(kind) <= P.MAX_ECHO_CHARS else "error"
        self.bad_input_log.log(now_ms / 1000, "refused", logging.WARNING, "refused type=%s from peer=%s: %s",
                               P.clip(kind), P.clip(conn.hex()), message)
        metric = kind if isinstance(kind, str) and kind in self.table else "unknown"
        self._error(conn, reply_type, header["cid"], code, message, metric, started)

    def _authorize(self, ctx: RequestContext, route: Route, fields: dict) -> RequestContext:
        """The context to run the request with (its ``refused`` resources), or raises."""
        claimed = route.sender(fields) if route.sender is not None else None
        if claimed is not None:
            if not self.peer:
                raise RequestError(ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                                   f"{route.kind} is a broker-to-broker request: brokers send it to each other's peer_port, "
                                   f"never on this listener")
            if ctx.broker_id is None or (claimed != ANY_BROKER and ctx.broker_id != claimed):
                raise RequestError(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, f"{route.kind} is only accepted from the broker it names")
        if self._check_access:
            refused = check_access(self.authorizer, ctx, route.access(fields), route.per_resource)
            if refused:
                return replace(ctx, refused=refused)
        return ctx

    # -- answers -----------------------------------------------------------------

    def _answer(self, conn: bytes, route: Route, cid: int, result: Any, started: float,
                refused: RequestError | None = None, throttle: _Throttle | None = None, held: bool = False,
                now_ms: int | None = None) -> None:
        """Send the route's reply; with ``refused`` (an any-version route asked at a version
        it does not serve) the reply carries that error too.  ``held``: the connection's
        in-flight slot this answer took while parked, released once it is sent.  ``now_ms``:
        None for an answer that was parked (the app's clock tells the time then)."""
        try:
            fields, payloads = route.reply(result)
        except Exception as exc:
            log.exception("error encoding the answer to type=%r cid=%s", route.kind, cid)
            self._release(conn, held)
            self._error(conn, route.kind, cid, ErrorCode.UNKNOWN_SERVER_ERROR, f"internal error: {exc!r}", route.kind, started)
            return
        delay = 0
        if throttle is not None:
            now_ms = self.app.clock() if now_ms is None else now_ms
            delay, payloads = self._throttle_ms(route, throttle, payloads, now_ms)
        if route.quota is not None:
            fields["throttle_time_ms"] = delay
        code, message = (refused.code, refused.message) if refused is not None else (0, None)
        frames = [P.encode(P.response(route.kind, cid, code, message, **fields)), *payloads]
        self.metrics.observe(self.listener, route.kind, time.perf_counter() - started, int(code))
        if delay > 0:
            self._send_later(conn, frames, now_ms, delay, held)
        else:
            self._release(conn, held)
            self.send(conn, frames)

    def _settled(self, conn: bytes, route: Route, cid: int, done: Completion, started: float,
                 refused: RequestError | None = None, throttle: _Throttle | None = None) -> None:
        if done.error is not None:
            self._release(conn, True)
            self._error(conn, route.kind, cid, done.error.code, done.error.message, route.kind, started)
        else:
            self._answer(conn, route, cid, done.value, started, refused, throttle, held=True)

    # -- quotas and limits ---------------------------------------------------------

    def _throttle_ms(self, route: Route, throttle: _Throttle, payloads: Frames, now_ms: int) -> tuple[int, Frames]:
        """How long to hold this answer back, and its payloads: a fetch's throttle time (its
        records left out if the principal was over its quota already); a produce's, no longer
        than its ``timeout_ms`` allows from its arrival (the client waits that long, and a
        bit more, for its answer: a later one would be a timeout, and a resend)."""
        if route.quota == FETCH:
            ms, keep = self.app.quotas.answer_fetch(throttle.principal, sum(map(len, payloads)), now_ms)
            return ms, payloads if keep else [b""] * len(payloads)
        if throttle.ms <= 0:
            return 0, payloads
        return max(0, min(throttle.ms, throttle.budget_ms - (now_ms - throttle.since_ms))), payloads

    def _send_later(self, conn: bytes, frames: Frames, now_ms: int, delay_ms: int, held: bool) -> None:
        """Hold a throttled answer back for ``delay_ms`` (parked in the purgatory, counted
        against the connection's in-flight limit until it leaves)."""
        if not held:
            self.in_flight.acquire(conn)

        def send(_now_ms: int) -> None:
            self.in_flight.release(conn)
            self.send(conn, frames)

        self.app.purgatory.call_at(now_ms + delay_ms, send, now_ms)

    def _release(self, conn: bytes, held: bool) -> None:
        if held:
            self.in_flight.release(conn)

    def _error(self, conn: bytes, kind: str, cid: int, code: int, message: str, metric: str, started: float) -> None:
        self.send(conn, [P.encode(P.response(kind, cid, code, message))])
        self.metrics.observe(self.listener, metric, time.perf_counter() - started, int(code))


class _Throttle:
    """A quota-counted request until its answer: who asked, when, how long a produce's
    client waits for its answer (``timeout_ms``), and the throttle time a produce's bytes
    earned on arrival (a fetch's is known from its answer)."""

    __slots__ = ("principal", "since_ms", "budget_ms", "ms")

    def __init__(self, principal: str, since_ms: int, budget_ms: int | None) -> None:
        self.principal = principal
        self.since_ms = since_ms
        self.budget_ms = budget_ms
        self.ms = 0
