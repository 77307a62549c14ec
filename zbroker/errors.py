"""Error codes and exceptions shared by the broker and the clients.

Wire error codes reuse Kafka's numbers wherever Kafka has the same error, so a
Kafka user reads them without a table and a Kafka-protocol front door can pass
them through unchanged.  Every code has an exception class, a subclass of
:class:`ZBrokerError`, with ``code`` and ``retriable`` class attributes;
:func:`for_code` maps a code from the wire to its class and keeps unknown codes
(a newer broker may send one) instead of crashing.

Client-side failures that have no wire code (the connection broke, the request
timed out, the client was closed, the peer broke the protocol) have their own
classes below; they are what a caller can act on.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Kafka's error numbers (those zbroker uses)."""

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_FETCH_SIZE = 4
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    BROKER_NOT_AVAILABLE = 8
    REPLICA_NOT_AVAILABLE = 9
    MESSAGE_TOO_LARGE = 10
    STALE_CONTROLLER_EPOCH = 11
    OFFSET_METADATA_TOO_LARGE = 12
    NETWORK_EXCEPTION = 13
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    RECORD_LIST_TOO_LARGE = 18
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    TOPIC_AUTHORIZATION_FAILED = 29
    GROUP_AUTHORIZATION_FAILED = 30
    CLUSTER_AUTHORIZATION_FAILED = 31
    INVALID_TIMESTAMP = 32
    UNSUPPORTED_SASL_MECHANISM = 33
    ILLEGAL_SASL_STATE = 34
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_REPLICA_ASSIGNMENT = 39
    INVALID_CONFIG = 40
    NOT_CONTROLLER = 41
    INVALID_REQUEST = 42
    POLICY_VIOLATION = 44
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    KAFKA_STORAGE_ERROR = 56
    SASL_AUTHENTICATION_FAILED = 58  # also: a CURVE key no longer admitted (native door)
    UNKNOWN_PRODUCER_ID = 59
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    FENCED_LEADER_EPOCH = 74
    UNKNOWN_LEADER_EPOCH = 75
    UNSUPPORTED_COMPRESSION_TYPE = 76
    OFFSET_NOT_AVAILABLE = 78
    MEMBER_ID_REQUIRED = 79
    FENCED_INSTANCE_ID = 82
    INVALID_RECORD = 87
    THROTTLING_QUOTA_EXCEEDED = 89
    RESOURCE_NOT_FOUND = 91
    DUPLICATE_RESOURCE = 92
    UNACCEPTABLE_CREDENTIAL = 93
    UNKNOWN_TOPIC_ID = 100
    FENCED_MEMBER_EPOCH = 110
    UNRELEASED_INSTANCE_ID = 111
    UNSUPPORTED_ASSIGNOR = 112
    STALE_MEMBER_EPOCH = 113


#: Codes a client may retry after refreshing metadata or waiting.
RETRIABLE = frozenset(
    {
        ErrorCode.CORRUPT_MESSAGE,  # Kafka marks it retriable: the bytes may have been damaged in flight
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.REQUEST_TIMED_OUT,
        ErrorCode.BROKER_NOT_AVAILABLE,
        ErrorCode.REPLICA_NOT_AVAILABLE,
        ErrorCode.NETWORK_EXCEPTION,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
        ErrorCode.NOT_COORDINATOR,
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ErrorCode.NOT_CONTROLLER,
        ErrorCode.KAFKA_STORAGE_ERROR,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.OFFSET_NOT_AVAILABLE,
        ErrorCode.REBALANCE_IN_PROGRESS,
        ErrorCode.UNKNOWN_TOPIC_ID,
        ErrorCode.THROTTLING_QUOTA_EXCEEDED,  # native door: a connection's in-flight limit; retry once answered
    }
)

#: Codes after which a client should refresh its metadata before retrying.
INVALID_METADATA = frozenset(
    {
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.NOT_CONTROLLER,
        ErrorCode.NOT_COORDINATOR,
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
        ErrorCode.UNKNOWN_TOPIC_ID,
    }
)


class RequestError(Exception):
    """A request a service cannot serve: the error code to answer with, and why.

    Raised by the services below the front doors; each front door's router turns it
    into its own protocol's error reply.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ZBrokerError(Exception):
    """Base of every zbroker error; ``code`` is the wire error code."""

    code: int = ErrorCode.UNKNOWN_SERVER_ERROR
    retriable: bool = False
    invalid_metadata: bool = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message

    def __reduce__(self):  # keep exceptions copyable across threads/futures
        return (self.__class__, (self.message,))


class UnknownError(ZBrokerError):
    """A code this client does not know; ``code`` holds the number received."""

    def __init__(self, message: str = "", code: int = ErrorCode.UNKNOWN_SERVER_ERROR) -> None:
        super().__init__(message or f"unknown error code {code}")
        self.code = code


def _class_name(name: str) -> str:
    camel = "".join(part.capitalize() for part in name.lower().split("_"))
    return camel if camel.endswith(("Error", "Exception")) else camel + "Error"


_BY_CODE: dict[int, type[ZBrokerError]] = {}


def _make_classes() -> None:
    for code in ErrorCode:
        if code == ErrorCode.NONE:
            continue
        attrs = {
            "code": int(code),
            "retriable": code in RETRIABLE,
            "invalid_metadata": code in INVALID_METADATA,
            "__doc__": f"Wire error {int(code)}: {code.name}.",
            "__module__": __name__,
        }
        cls = type(_class_name(code.name), (ZBrokerError,), attrs)
        globals()[cls.__name__] = cls
        _BY_CODE[int(code)] = cls


_make_classes()


def for_code(code: int) -> type[ZBrokerError]:
    """Return the exception class for a wire error code (UnknownError if unknown)."""
    return _BY_CODE.get(code, UnknownError)


def error_from(code: int, message: str | None = None) -> ZBrokerError:
    """Build the exception for a wire error code, keeping unknown codes."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return UnknownError(message or "", code=code)
    return cls(message or "")


# -- client-side failures without a wire code ------------------------------------


class ClientClosedError(ZBrokerError):
    """The client (producer, consumer, admin) was closed by your code."""


class ConnectionBrokenError(ZBrokerError):
    """The connection to a broker broke; the request's fate is unknown."""

    retriable = True
    invalid_metadata = True


class RequestTimeoutError(ZBrokerError):
    """No response arrived within the request timeout."""

    code = ErrorCode.REQUEST_TIMED_OUT
    retriable = True
    invalid_metadata = True


class AuthenticationError(_BY_CODE[ErrorCode.SASL_AUTHENTICATION_FAILED]):
    """The broker did not admit this client: its CURVE handshake failed (no key, a key the
    broker does not know, or the wrong server key) or its key was removed.  Not retriable:
    fix the keys (docs/security.md)."""


class ProtocolError(ZBrokerError):
    """A peer sent something that breaks the protocol."""


class LocalProtocolError(ProtocolError):
    """This side broke the protocol (for example a field of the wrong type)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol (malformed header, unknown type...)."""


class CorruptRecordError(_BY_CODE[ErrorCode.CORRUPT_MESSAGE]):
    """The consumer cannot read a fetched batch (Kafka's CorruptRecordException, code 2).

    Raised by ``Consumer.poll()`` after it has returned every record before the batch. The
    position stays at the batch and fetching of the partition stops until a seek: every
    further ``poll()`` raises this again. ``seek(topic, partition, next_offset)`` skips it.

    Attributes:
        topic, partition: Where the batch is.
        offset: The batch's base offset.
        next_offset: The offset after the batch (from its header): where to seek to skip it.
            For offsets the broker lost to damage: ``offset`` and ``next_offset`` are the
            lost range's start and end; ``next_offset`` is None if the broker did not say.
    """

    def __init__(self, message: str, topic: str, partition: int, offset: int, next_offset: int | None) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.next_offset = next_offset

    def __reduce__(self):
        return (self.__class__, (self.message, self.topic, self.partition, self.offset, self.next_offset))


class DecompressionLimitExceededError(CorruptRecordError):
    """A fetched batch decompresses past the consumer's bound (its ``fetch_max_bytes``).

    A subclass of :class:`CorruptRecordError`: either the batch is hostile (a few bytes that
    expand to gigabytes), or its records are legitimately larger than the consumer agreed
    to take in one fetch: raise ``fetch_max_bytes`` to read it, or seek past it.
    """
