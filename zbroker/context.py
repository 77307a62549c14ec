"""What every service call carries, whatever front door it came through.

Every front door (the native ZeroMQ protocol today; Kafka's protocol, the ZeroMQ
bridge and HTTP next) turns a request into a :class:`RequestContext` plus typed
arguments, as nats-server turns every listener's connection into the same client
object.  Services below the front doors see the context, never a socket, a wire
format, a routing id or a correlation id, so the authorizer, quotas and metrics
apply the same way to every protocol.

A service answers with a value, raises :class:`zbroker.errors.RequestError`, or --
when the answer has to wait (a long-poll fetch, an acks=all produce, an admin
change until it is committed) -- returns a :class:`Completion` that it settles
later.  The front door sends the reply when the completion settles.

Broker-to-broker messages leave through a :class:`PeerChannel`, which a front door
implements (the native one encodes them for the broker's DEALERs and keeps the one
table of calls in flight); services name the broker and hand over a typed message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Hashable, Protocol, TypeVar

from zbroker.errors import ErrorCode, RequestError

T = TypeVar("T")

ANONYMOUS = "User:ANONYMOUS"


def broker_principal(broker_id: int) -> str:
    """The principal of a broker of this cluster (its inter-broker traffic)."""
    return f"Broker:{broker_id}"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asks, and through which door.

    Attributes:
        principal: ``User:NAME``, ``Broker:N`` or ``User:ANONYMOUS``.
        listener: the front door's name (``native``, ``kafka``, ``bridge``, ``internal``).
        client_id: what the client calls itself (logs and metrics only).
        connection: an opaque handle the front door uses to answer; services only
            compare or store it, never look inside.
        refused: the resources (:class:`zbroker.security.Resource`) the router's authorizer
            refused for this request where the request answers resource by resource
            (a Produce's TOPIC_AUTHORIZATION_FAILED partitions): the handler answers those
            and passes only the rest to the services.
    """

    principal: str = ANONYMOUS
    listener: str = "internal"
    client_id: str = ""
    connection: Hashable = None
    refused: frozenset = frozenset()

    @property
    def broker_id(self) -> int | None:
        """The broker id of a ``Broker:N`` principal, else None."""
        if self.principal.startswith("Broker:"):
            try:
                return int(self.principal[7:])
            except ValueError:
                return None
        return None


#: The context of work a broker starts itself (timers, auto-creation, forwarding).
INTERNAL = RequestContext(principal="Broker:self", listener="internal")


class Completion(Generic[T]):
    """An answer that comes later: settled once, with a value or a RequestError.

    The service that returns it settles it (:meth:`complete` or :meth:`fail`); the
    front door registers one callback (:meth:`on_done`) that sends the reply.  A
    callback registered after settling runs at once.
    """

    __slots__ = ("_callback", "_settled", "value", "error", "_on_abandon")

    def __init__(self) -> None:
        self._callback: Callable[[Completion[T]], None] | None = None
        self._on_abandon: Callable[[], None] | None = None
        self._settled = False
        self.value: T | None = None
        self.error: RequestError | None = None

    @property
    def done(self) -> bool:
        return self._settled

    def complete(self, value: T | None = None) -> None:
        if not self._settled:
            self._settled, self.value = True, value
            self._fire()

    def fail(self, error: RequestError) -> None:
        if not self._settled:
            self._settled, self.error = True, error
            self._fire()

    def fail_with(self, code: ErrorCode, message: str) -> None:
        self.fail(RequestError(code, message))

    def on_done(self, callback: Callable[[Completion[T]], None]) -> None:
        self._callback = callback
        if self._settled:
            self._fire()

    def on_abandon(self, hook: Callable[[], None]) -> None:
        """What the service that parked this answer frees when nobody waits for it any more."""
        self._on_abandon = hook

    def abandon(self) -> None:
        """Nobody waits for this answer any more (its connection closed): the front door's
        callback is dropped (and with it the connection it holds), and the service's
        :meth:`on_abandon` hook runs.  What the request did (an append) stands."""
        if self._settled:
            return
        self._callback = None
        hook, self._on_abandon = self._on_abandon, None
        if hook is not None:
            hook()

    def _fire(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback(self)


#: :attr:`PeerReply.value` of a call that got no answer in time (its error is REQUEST_TIMED_OUT).
TIMED_OUT = object()


@dataclass(frozen=True, slots=True)
class PeerReply:
    """Another broker's answer to a :meth:`PeerChannel.call` (or the timeout of one:
    ``error`` REQUEST_TIMED_OUT, ``value`` :data:`TIMED_OUT`)."""

    error: int = 0
    message: str | None = None
    value: Any = None  # the typed result the call's message decodes to


class PeerChannel(Protocol):
    """Broker-to-broker messages, as services see them (implemented by a front door)."""

    def send(self, broker_id: int, message: Any) -> None:
        """One-way (Raft): may be lost; the sender retries on its own timers."""

    def call(self, broker_id: int, message: Any, on_reply: Callable[[PeerReply, int], None], timeout_ms: int,
             now_ms: int) -> None:
        """A request whose answer (or REQUEST_TIMED_OUT after ``timeout_ms``) reaches
        ``on_reply(reply, now_ms)``."""
