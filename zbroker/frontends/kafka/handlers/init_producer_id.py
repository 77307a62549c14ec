"""InitProducerId (key 22): producer ids for idempotent producers.

An idempotent producer (kafka-python and quixstreams by default, librdkafka with
``enable.idempotence``) asks once for a producer id; the controller hands ids out from a
counter in the metadata log (:meth:`TopicAdmin.init_producer_id`, as for native producers),
so an id is never given twice.  Its batches then carry the id, epoch 0 and per-partition
sequence numbers, which the leader checks (duplicates acknowledged, not written twice).

A producer that sends its current id and epoch (v3+, KIP-360: kafka-python does after an
error it recovers from) gets a new id with epoch 0, which is what a Kafka broker does for a
producer without a transactional id: its sequences start again at 0 under the new id.
(librdkafka's idempotent producer bumps its epoch itself, without asking.)

Authorization: Kafka's IDEMPOTENT_WRITE on the cluster, which an ACL ``write`` on the
cluster grants, and so does ``write`` on any topic (KIP-679; see :mod:`zbroker.security.acl`).

Transactions are not supported: a ``transactional_id`` gets INVALID_TXN_STATE (48), the
code Produce uses for transactional batches (see ``produce.py``), which the Java client
and kafka-python treat as fatal for InitProducerId.  (librdkafka retries InitProducerId on
any error but four, logging "Failed to acquire transactional PID ...: Producer attempted a
transactional operation in an invalid state", until ``init_transactions()`` times out; the
four it stops on would each name a wrong cause -- an ACL, a timeout setting or a fenced
producer.)
"""

from __future__ import annotations

from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka.datapath import then
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import CLUSTER, Operation

API_KEY = 22
VERSIONS = (0, 6)


def init_producer_id(app, ctx, request, version, now_ms):
    if request.transactional_id is not None:
        raise RequestError(ErrorCode.INVALID_TXN_STATE, "transactions are not supported by zbroker")
    return then(app.admin.init_producer_id(ctx, now_ms),
                lambda pid: {"error_code": 0, "producer_id": pid.producer_id, "producer_epoch": pid.producer_epoch})


def _error(request, version, code, message):
    return {"error_code": code, "producer_id": -1, "producer_epoch": -1}


ROUTE = KafkaRoute(API_KEY, "InitProducerId", VERSIONS, init_producer_id, error=_error,
                   access=lambda request: [(Operation.IDEMPOTENT_WRITE, CLUSTER)])
