"""The Kafka router: one table of API keys, one place that runs every Kafka request.

For each request a :class:`KafkaConnection` cut from its TCP stream,
:meth:`KafkaRouter.handle`:

0. on a listener with SASL, until the connection is authenticated: serves only the
   routes marked ``before_auth`` (ApiVersions, SaslHandshake, SaslAuthenticate) and
   closes the connection on anything else, as Kafka's broker does; after a v0
   SaslHandshake the next frames are raw SASL tokens, handed to the session; once
   authenticated, closes the connection when the user's credential is removed or
   replaced (checked at each request);
1. reads the header's API key, version and correlation id; a key this broker does not
   serve, or a version outside the route's range, is answered with the correlation id
   and error UNSUPPORTED_VERSION (35) and the connection stays usable -- except
   ApiVersions, which is answered at any version with the full list (KIP-511);
2. decodes the header (v1, or v2 for flexible versions) and the body with kio's schema
   of that version; bytes that do not decode close the connection with a log line
   naming the API, version and fault (what Kafka brokers do: the stream cannot be
   trusted after a bad request);
3. builds the :class:`RequestContext` (the connection's principal, listener ``kafka``,
   the client's ``client_id``) and authorizes each (operation, resource) the route names,
   topics named by id once resolved to their names: a refusal fails the whole request
   (TOPIC_/GROUP_/CLUSTER_AUTHORIZATION_FAILED in the route's error answer), except for
   the resource types the route answers one by one where Kafka does
   (:attr:`KafkaRoute.per_resource`: the handler gets them in ``ctx.refused``);
4. runs the handler, which calls the services with typed arguments and answers with a
   dict of response fields, a :class:`Completion` of one, or :data:`NO_REPLY`;
5. encodes the answer in the request's version (a :class:`RequestError` becomes the
   route's error answer, any other exception is logged with its traceback and becomes
   UNKNOWN_SERVER_ERROR) and queues it in the connection's request order;
6. records count, errors and latency per API in the metrics registry.

Quotas (``zbroker.security.quotas``, KIP-13 and KIP-219): a Produce's record bytes and a
Fetch's answered record bytes count against the principal's byte-rate quota.  The answer
carries ``throttle_time_ms`` and goes out at once; the connection is then *muted* for that
long: not read, and its requests already read not run (they wait, at most what one read
brought, bounded by the framer and :data:`MAX_IN_FLIGHT`).  Kafka clients of KIP-219's
versions (Produce v6+, Fetch v8+) also wait on their own before sending to this broker again.

Adding an API is one handler module with a ``ROUTE`` (see ``handlers/``).
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Hashable, Iterable

from zbroker.context import ANONYMOUS, Completion, RequestContext
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka import codec
from zbroker.frontends.kafka.datapath import TopicId, topic_name
from zbroker.frontends.kafka.framer import Framer, FrameTooLarge, ReplyOrder
from zbroker.frontends.kafka.sasl import AUTH_TIMEOUT_MS, MAX_UNAUTHENTICATED_REQUEST_BYTES, SaslError, SaslSession
from zbroker.metrics import RequestMetrics
from zbroker.ratelimit import RateLimitedLog
from zbroker.security import AllowAll, Authorizer, Operation, Resource, ResourceType, check_access, topic
from zbroker.security.quotas import FETCH, PRODUCE

log = logging.getLogger(__name__)

MAX_CLIENT_ID_CHARS = 255  # of a client id kept (the native door's cap on any id)

LISTENER = "kafka"
#: A handler's answer meaning "send nothing" (an acks=0 produce).
NO_REPLY = object()
#: A handler's answer meaning "send nothing and close the connection once the replies
#: before it are written": an acks=0 produce that failed.  Kafka's broker does this
#: (KafkaApis.handleProduceRequest), since the client reads no answer: the dropped
#: connection is how it learns, and it refreshes its metadata before it sends again
#: (a leader that moved, a topic deleted), instead of writing into the void.
CLOSE_CONNECTION = object()
#: Requests of one connection in progress at once; beyond it the connection is not read
#: until replies leave (Kafka clients keep at most a handful in flight).
MAX_IN_FLIGHT = 32
_INT32 = struct.Struct(">i")

def top_level_error(request, version: int, code: int, message: str) -> dict:
    """The error answer of an API whose response has a top-level ``error_code``."""
    return {"error_code": code, "error_message": message}


@dataclass(frozen=True)
class KafkaRoute:
    """One API key of the Kafka protocol.

    Attributes:
        api_key: Kafka's number for the API.
        name: its name (metrics, logs).
        versions: the versions served, inclusive (advertised by ApiVersions).
        call: ``call(app, ctx, request, version, now_ms)`` -> a dict of response fields, a
            Completion of one, or :data:`NO_REPLY`.  ``request`` is kio's dataclass of that
            version.
        error: ``error(request, version, code, message)`` -> the response fields that
            report ``code`` for the whole request (per partition where the API has no
            top-level error).
        access: ``access(request) -> [(Operation, Resource), ...]`` to authorize; a topic
            named only by id is a :class:`~.datapath.TopicId`, which the router resolves
            (an id no topic has is left to the handler: UNKNOWN_TOPIC_ID).
        per_resource: resource types whose refusals the handler answers one by one (in
            ``ctx.refused``), as Kafka does (per partition, topic, group or config resource).
        any_version: answer at any version (ApiVersions); the call gets ``request=None``
            and the answer is encoded at version 0 with UNSUPPORTED_VERSION.
        before_auth: served before a SASL connection has authenticated (ApiVersions).
        sasl: a step of SASL authentication (SaslHandshake, SaslAuthenticate): served
            before authentication, and called with the connection's
            :class:`~zbroker.frontends.kafka.sasl.SaslSession` (None on a listener without
            SASL) in place of the app.
        quota: :data:`~zbroker.security.quotas.PRODUCE` (counted when the request has run)
            or :data:`~zbroker.security.quotas.FETCH` (counted on its answer) bytes of the
            principal's quota; the answer carries ``throttle_time_ms``.
        quota_bytes: ``quota_bytes(request, answer)`` -> the bytes counted (``answer`` is
            None for a produce).
        quota_empty: ``quota_empty(answer)`` takes the records out of a fetch's answer (the
            principal was over its quota already: Kafka's rule).
    """

    api_key: int
    name: str
    versions: tuple[int, int]
    call: Callable[..., Any]
    error: Callable[..., dict] = top_level_error
    access: Callable[[Any], Iterable[tuple[Operation, Resource]]] = lambda request: ()
    any_version: bool = False
    per_resource: frozenset[ResourceType] = frozenset()
    before_auth: bool = False
    sasl: bool = False
    quota: str | None = None
    quota_bytes: Callable[[Any, dict | None], int] | None = None
    quota_empty: Callable[[dict], None] | None = None


class KafkaRouter:
    """Runs Kafka requests against the services of ``app``."""

    def __init__(self, app, routes: Iterable[KafkaRoute], authorizer: Authorizer, metrics: RequestMetrics) -> None:
        self.app = app
        self.table: dict[int, KafkaRoute] = {}
        for route in routes:
            if route.api_key in self.table:
                raise ValueError(f"two routes for API key {route.api_key}")
            self.table[route.api_key] = route
        self.authorizer = authorizer
        self._check_access = not isinstance(authorizer, AllowAll)
        self.metrics = metrics
        self.bad_input_log = RateLimitedLog(log, burst=10, window_s=10.0)

    def versions(self) -> list[tuple[int, int, int]]:
        """``(api_key, min, max)`` of every API served, for ApiVersions."""
        return [(key, r.versions[0], r.versions[1]) for key, r in sorted(self.table.items())]

    def handle(self, conn: "KafkaConnection", frame: bytes, slot: int, now_ms: int) -> None:
        """Run one request of ``conn``; its reply fills ``slot``."""
        started = time.perf_counter()
        sasl = conn.sasl
        if sasl is not None and sasl.raw_tokens and not sasl.authenticated:
            self._raw_token(conn, frame, slot)
            return
        try:
            api_key, version, cid = codec.peek_header(frame)
        except codec.MalformedRequest as exc:
            conn.fail(f"{exc}")
            return
        route = self.table.get(api_key)
        name = route.name if route is not None else "unknown"
        if sasl is not None and not self._admitted(conn, sasl, route, api_key):
            return
        if route is None or not (route.versions[0] <= version <= route.versions[1]) and not route.any_version:
            what = f"API key {api_key}" if route is None else f"{route.name} v{version} (served: v{route.versions[0]}-v{route.versions[1]})"
            self.bad_input_log.log(now_ms / 1000, "unsupported", logging.WARNING, "unsupported request from %s client_id=%s: %s",
                                   conn.peer, conn.client_id, what)
            conn.fill(slot, codec.error_only_response(cid, ErrorCode.UNSUPPORTED_VERSION))
            self.metrics.observe(LISTENER, name, time.perf_counter() - started, ErrorCode.UNSUPPORTED_VERSION)
            return
        served = route.versions[0] <= version <= route.versions[1]
        schema = codec.request_schema(api_key, version) if served else None
        try:
            header = codec.decode_header(frame, bool(schema is not None and schema.__flexible__))
            request = codec.decode_body(schema, frame, header.size) if schema is not None else None
        except codec.MalformedRequest as exc:
            conn.fail(f"{route.name} v{version}: {exc}")
            self.metrics.observe(LISTENER, name, time.perf_counter() - started, ErrorCode.INVALID_REQUEST)
            return
        if header.client_id:
            # logs and metrics only: a client id of 32 KiB must not make every log line about it that long
            conn.client_id = header.client_id[:MAX_CLIENT_ID_CHARS]
        reply_version = version if served else 0
        ctx = RequestContext(conn.principal, LISTENER, conn.client_id or "", conn.id)
        try:
            if served:
                ctx = self._authorize(ctx, route, request)
            answer = route.call(sasl if route.sasl else self.app, ctx, request, version, now_ms)
            throttle = self._record(route, PRODUCE, ctx, request, None, now_ms) if served else 0
        except RequestError as exc:
            answer, throttle = self._error_answer(conn, route, request, version, exc.code, exc.message), 0
        except Exception as exc:  # a bug must not stop the broker
            log.exception("error handling %s v%s from %s", route.name, version, conn.peer)
            answer, throttle = self._error_answer(conn, route, request, version, ErrorCode.UNKNOWN_SERVER_ERROR,
                                                  f"internal error: {exc!r}"), 0
            if route.sasl and sasl is not None and not sasl.authenticated:
                sasl.abort(f"internal error in {route.name}")
        if route.sasl and sasl is not None:
            self._answer(conn, slot, route, request, reply_version, cid, answer, started)
            conn.sasl_stepped()
            return
        if answer is NO_REPLY or answer is CLOSE_CONNECTION:
            conn.throttle(throttle, now_ms)  # an acks=0 produce has no answer to carry it: the mute alone slows it
            conn.fill(slot, None if answer is NO_REPLY else CLOSE_CONNECTION)
            self.metrics.observe(LISTENER, name, time.perf_counter() - started)
        elif isinstance(answer, Completion):
            conn.parked.add(answer)
            answer.on_done(lambda done: self._settled(conn, slot, route, request, reply_version, cid, done, started, ctx, throttle))
        else:
            self._answer(conn, slot, route, request, reply_version, cid, answer, started, ctx, throttle, now_ms)

    @staticmethod
    def _error_answer(conn, route: KafkaRoute, request, version: int, code: int, message: str):
        """The route's answer reporting ``code``; if building it fails (a bug), the connection
        is closed after the answers before it, instead of its reply slot staying empty."""
        try:
            return route.error(request, version, code, message)
        except Exception:
            log.exception("error answering %s v%s from %s with error %s", route.name, version, conn.peer, code)
            return CLOSE_CONNECTION

    def _authorize(self, ctx: RequestContext, route: KafkaRoute, request) -> RequestContext:
        """The context to run the request with (its ``refused`` resources), or raises."""
        if not self._check_access:
            return ctx
        refused = check_access(self.authorizer, ctx, self._resolved(route.access(request)), route.per_resource)
        return replace(ctx, refused=refused) if refused else ctx

    def _resolved(self, pairs):
        """``pairs`` with topics named by id (:class:`TopicId`) named by name."""
        for operation, resource in pairs:
            if isinstance(resource, TopicId):
                name = topic_name(self.app, resource.topic_id)
                if name is None:
                    continue  # no such topic: the handler answers UNKNOWN_TOPIC_ID
                resource = topic(name)
            yield operation, resource

    def _admitted(self, conn: "KafkaConnection", sasl: SaslSession, route: KafkaRoute | None, api_key: int) -> bool:
        """Whether a request may run on a SASL connection; closes the connection if not."""
        if sasl.authenticated:
            if sasl.still_valid():
                return True
            conn.fail(f"the credentials {sasl.principal} logged in with were removed or replaced")
            return False
        if route is None or not (route.before_auth or route.sasl):
            what = route.name if route is not None else f"API key {api_key}"
            conn.fail(f"{what} before SASL authentication (until then only ApiVersions, SaslHandshake and "
                      f"SaslAuthenticate are served)")
            return False
        try:
            sasl.count_request()
        except SaslError as exc:
            conn.fail(exc.message)
            return False
        return True

    def _raw_token(self, conn: "KafkaConnection", frame: bytes, slot: int) -> None:
        """A SASL token after a v0 SaslHandshake: size-prefixed, no header, answered the same
        way; a refused one can only close the connection (the v0 protocol has no error)."""
        try:
            reply = conn.sasl.authenticate(frame)
        except SaslError:
            reply = None
        conn.fill(slot, None if reply is None else _INT32.pack(len(reply)) + reply)
        conn.sasl_stepped(answered=reply is not None)

    def _record(self, route: KafkaRoute, kind: str, ctx: RequestContext, request, answer: dict | None, now_ms: int) -> int:
        """Count a ``kind`` route's bytes against the principal's quota; its throttle time.  A
        fetch's answer loses its records if the principal was over its quota already."""
        if route.quota != kind or not self.app.quotas.enabled():
            return 0
        if kind == PRODUCE:
            return self.app.quotas.record(kind, ctx.principal, route.quota_bytes(request, answer), now_ms)
        throttle, keep = self.app.quotas.answer_fetch(ctx.principal, route.quota_bytes(request, answer), now_ms)
        if not keep:
            route.quota_empty(answer)
        return throttle

    def _settled(self, conn, slot, route, request, version, cid, done: Completion, started, ctx=None, throttle=0) -> None:
        conn.parked.discard(done)
        # runs inside whatever settled ``done`` (the purgatory, a group answering all its
        # members in a loop): an exception here would skip the rest of that work and leave
        # this connection's reply slot empty, holding back every later reply
        try:
            if done.error is not None:
                answer = route.error(request, version, done.error.code, done.error.message)
            else:
                answer = done.value
            if answer is NO_REPLY or answer is CLOSE_CONNECTION:
                conn.fill(slot, None if answer is NO_REPLY else CLOSE_CONNECTION)
                return
            self._answer(conn, slot, route, request, version, cid, answer, started, ctx, throttle, conn.now_ms())
        except Exception:
            log.exception("error answering %s v%s from %s", route.name, version, conn.peer)
            conn.fail(f"cannot answer {route.name} v{version}")

    def _answer(self, conn, slot, route, request, version, cid, answer: dict, started, ctx=None, throttle=0,
                now_ms=0) -> None:
        if route.quota is not None and ctx is not None:
            throttle = max(throttle, self._record(route, FETCH, ctx, request, answer, now_ms))
            answer["throttle_time"] = throttle  # kio's name of Kafka's throttle_time_ms
        try:
            data = codec.encode_response(route.api_key, version, cid, answer)
        except Exception as exc:
            log.exception("error encoding the answer to %s v%s", route.name, version)
            try:
                data = codec.encode_response(route.api_key, version, cid,
                                             route.error(request, version, ErrorCode.UNKNOWN_SERVER_ERROR, f"internal error: {exc!r}"))
            except Exception:
                conn.fail(f"cannot encode the answer to {route.name} v{version}")
                return
        conn.throttle(throttle, now_ms)  # before the answer leaves: nothing after it runs while muted
        conn.fill(slot, data)
        code = answer.get("error_code", 0) if isinstance(answer, dict) else 0
        self.metrics.observe(LISTENER, route.name, time.perf_counter() - started, int(code or 0))


class Transport:
    """What a connection needs from the network (implemented by the TCP listener)."""

    def write(self, data: list[bytes]) -> None: ...

    def close(self) -> None: ...

    def close_after_write(self, linger: bool = False) -> None:
        """Close once what was written is sent (optional: :meth:`close` if missing); with
        ``linger``, leave the client time to read the last answer and close first."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_deadline(self, delay_ms: int, why: str) -> None:
        """Close the connection in ``delay_ms`` (logging ``why``) unless cleared first."""

    def clear_deadline(self) -> None: ...


class KafkaConnection:
    """One Kafka client connection, sans-IO: bytes in (:meth:`data_received`), replies out
    through its transport in request order."""

    def __init__(self, router: KafkaRouter, conn_id: Hashable, peer: str, transport: Transport, max_request_bytes: int,
                 principal: str = ANONYMOUS, clock: Callable[[], int] | None = None, sasl: SaslSession | None = None) -> None:
        self.router = router
        self.id = conn_id
        self.peer = peer
        self.transport = transport
        self.principal = principal
        self.client_id: str | None = None
        self.max_request_bytes = max_request_bytes
        # with SASL: small requests only, and a deadline, until the client has authenticated
        self.sasl = sasl
        self.framer = Framer(max_request_bytes if sasl is None else min(max_request_bytes, MAX_UNAUTHENTICATED_REQUEST_BYTES))
        if sasl is not None:
            transport.set_deadline(AUTH_TIMEOUT_MS, f"SASL authentication not finished within {AUTH_TIMEOUT_MS} ms")
        self.replies = ReplyOrder()
        self.closed = False
        self._paused = False
        # Requests cut from the stream but not yet run: one read can carry thousands of
        # small requests (a pipelining or hostile client), and each may produce a large
        # reply.  They run only while fewer than MAX_IN_FLIGHT replies are outstanding and
        # the transport's output is not backed up (pause_writing), so the broker holds at
        # most that many replies per connection, whatever the client sends.
        self._pending: deque[bytes] = deque()
        self.parked: set[Completion] = set()  # answers parked in a service, abandoned if the connection closes
        self._writing_paused = False
        self._running = False
        self._muted_until = 0  # > 0: throttled (a quota), neither read nor run until then
        self._now = 0
        self._clock = clock or (lambda: self._now)
        self._linger = False  # the close ends with an answer the client must read (a refused login)

    def data_received(self, data: bytes, now_ms: int) -> None:
        self._now = now_ms
        try:
            frames = self.framer.feed(data)
        except FrameTooLarge as exc:
            self.fail(str(exc))
            return
        self._pending.extend(frames)
        self._run(now_ms)

    def _run(self, now_ms: int) -> None:
        """Run pending requests while the connection has room for their replies."""
        if self._running:  # a reply filled from inside handle(): the loop below goes on
            return
        self._running = True
        try:
            while (self._pending and not self.closed and not self._writing_paused and not self._muted_until
                   and len(self.replies) < MAX_IN_FLIGHT):
                self.router.handle(self, self._pending.popleft(), self.replies.reserve(), now_ms)
        finally:
            self._running = False
        if self.closed:
            return
        if (self._pending or len(self.replies) >= MAX_IN_FLIGHT or self._muted_until) and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        elif self._paused and not self._pending and len(self.replies) < MAX_IN_FLIGHT // 2 and not self._muted_until:
            self._paused = False
            self.transport.resume_reading()

    def now_ms(self) -> int:
        return self._clock()

    def throttle(self, delay_ms: int, now_ms: int) -> None:
        """Mute the connection for ``delay_ms``: a quota's throttle (KIP-219), applied as its
        answer leaves.  A later throttle that ends sooner changes nothing."""
        until = now_ms + delay_ms
        if delay_ms <= 0 or self.closed or until <= self._muted_until:
            return
        self._muted_until = until
        if not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self.router.app.purgatory.call_at(until, self._unmute, now_ms)  # the loop's timers

    def _unmute(self, now_ms: int) -> None:
        if self.closed or not self._muted_until or now_ms < self._muted_until:
            return  # closed, or muted again for longer: that throttle's own timer ends it
        self._muted_until = 0
        if not self._running:
            self._run(now_ms)

    def fill(self, slot: int, reply) -> None:
        """``reply``: the bytes to send, None for nothing, or :data:`CLOSE_CONNECTION`."""
        if self.closed:
            return
        self.replies.fill(slot, reply)
        ready = self.replies.ready()
        if ready and ready[-1] is CLOSE_CONNECTION:  # ready() stops at it
            self.closed = True
            self._pending.clear()
            self.transport.write(ready[:-1])
            close_after_write = getattr(self.transport, "close_after_write", None)
            if close_after_write is None:
                self.transport.close()
            else:
                close_after_write(linger=self._linger)
            return
        if ready:
            self.transport.write(ready)
        if not self._running:
            self._run(self._clock())

    def sasl_stepped(self, answered: bool = True) -> None:
        """After a SASL step: a failed session closes the connection once its answer is
        written, lingering if there is one (``answered``; a refused v0 raw token has none) so
        that the client reads it before the close (:meth:`Transport.close_after_write`); a
        successful one makes the user the connection's principal."""
        sasl = self.sasl
        if sasl.failed:
            self.router.bad_input_log.log(time.time(), "sasl_failed", logging.INFO,
                                          "SASL authentication failed from %s client_id=%s user=%.64r mechanism=%s: %s",
                                          self.peer, self.client_id, sasl.user, sasl.mechanism, sasl.failure)
            if not self.closed:
                self._linger = answered
                self.fill(self.replies.reserve(), CLOSE_CONNECTION)
        elif sasl.authenticated and self.principal != sasl.principal:
            self.principal = sasl.principal
            self.framer.max_size = self.max_request_bytes
            self.transport.clear_deadline()
            log.debug("Kafka connection %s authenticated as %s (%s)", self.peer, sasl.principal, sasl.mechanism)

    def pause_writing(self) -> None:
        """The transport's unwritten output passed its limit: run no more requests."""
        self._writing_paused = True

    def resume_writing(self) -> None:
        """The transport's output drained: run the requests that waited."""
        self._writing_paused = False
        if not self.closed and not self._running:
            self._run(self._clock())

    def fail(self, why: str) -> None:
        """Bad bytes from the client: log it and close the connection."""
        self.router.bad_input_log.log(time.time(), "malformed", logging.WARNING, "closing Kafka connection from %s client_id=%s: %s",
                                      self.peer, self.client_id, why)
        self.closed = True
        self.transport.close()

    def connection_lost(self) -> None:
        """The peer went away: replies still to come are dropped, requests not run are not."""
        self.closed = True
        self._pending.clear()
        parked, self.parked = self.parked, set()
        for answer in parked:  # a long poll or a join nobody waits for: let go of it (and of this connection)
            answer.abandon()
