"""One answer from many service calls: the admin APIs act on several topics per request.

A Kafka admin request (CreateTopics, DeleteTopics, AlterConfigs, ...) names several
resources, each with its own result.  :func:`gather` runs one service call per resource;
each answers at once (a value, or a :class:`RequestError`) or later (a
:class:`Completion`, e.g. once the controller committed the change).  When every call
has settled, ``answer`` turns the outcomes into the response's fields.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable

from zbroker.context import Completion
from zbroker.errors import ErrorCode, RequestError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    """How one resource's call ended: ``error_code`` 0 and its ``value``, or an error."""

    error_code: int = 0
    error_message: str | None = None
    value: Any = None


def failed(code: int, message: str) -> Outcome:
    return Outcome(int(code), message)


def gather(calls: Iterable[tuple[Hashable, Callable[[], Any] | Outcome]],
           answer: Callable[[dict[Hashable, Outcome]], dict]) -> dict | Completion:
    """Run each ``(key, call)`` in order; ``answer(outcomes by key)`` once all settled.

    A call may be an :class:`Outcome` already (a resource refused before any service was
    asked).  Returns ``answer``'s dict if every call answered at once, else a Completion
    that settles with it.
    """
    outcomes: dict[Hashable, Outcome] = {}
    waiting: dict[Hashable, Completion] = {}
    for key, call in calls:
        if isinstance(call, Outcome):
            outcomes[key] = call
            continue
        try:
            result = call()
        except RequestError as exc:
            outcomes[key] = Outcome(int(exc.code), exc.message)
            continue
        if isinstance(result, Completion):
            waiting[key] = result
        else:
            outcomes[key] = Outcome(0, None, result)
    if not waiting:
        return answer(outcomes)
    done: Completion = Completion()

    def settled(key: Hashable, completion: Completion) -> None:
        if completion.error is not None:
            outcomes[key] = Outcome(int(completion.error.code), completion.error.message)
        else:
            outcomes[key] = Outcome(0, None, completion.value)
        del waiting[key]
        if waiting:
            return
        try:
            done.complete(answer(outcomes))
        except Exception as exc:  # settled from a service's callback: a bug must not reach it
            log.exception("error building an admin answer")
            done.fail_with(ErrorCode.UNKNOWN_SERVER_ERROR, f"internal error: {exc!r}")

    for key, completion in list(waiting.items()):
        completion.on_done(lambda c, key=key: settled(key, c))
    return done
