"""CurveZMQ keys: who is a broker, which clients are admitted, and what each key's principal is.

Brokers always talk to each other over CurveZMQ (the inter-broker ROUTER on ``peer_port``,
the DEALERs to it, the gossip PUB/SUB), so only a broker can send broker-to-broker
messages, whatever ``[security]`` says:

- ``[security] curve = true``: each broker's key pair is its own, read from its
  ``secret_key_file`` (pyzmq's ``zmq.auth`` certificate format); the other brokers' public
  keys come from the config's ``public_key`` entries (:func:`broker_keys`).
- curve off: every broker's key pair is derived from ``[security] cluster_secret``
  (:func:`derive_broker_keypair`): secret key = HMAC-SHA256(cluster_secret,
  ``"zbroker broker key <id>"``) in Z85, public key = its Curve25519 public key.  Knowing
  the secret is being a broker; a client that does not know it cannot pose as one.

Clients (``curve = true`` only) are admitted by the public key files in
``authorized_keys_dir``: ``NAME.key`` (``zbroker keys generate NAME``) admits its key as
the principal ``User:NAME`` (:class:`KeyDir`).  The directory is rescanned once a second
when requests come, and when an unknown key knocks if the directory changed since (a file
added, removed or renamed; else at most every 100 ms), so keys added or removed there take
effect without a restart: a new key at its first handshake, a removed one within a second.

A connection's ZAP User-Id is ``"<principal> <Z85 public key>"`` (:func:`user_id`); every
request's principal is read back from it (:func:`split_user_id`) and checked against the
live key map, so a key removed or replaced while its connection is open stops working at
its next request.

Everything here is values and files; the ZAP handler that uses it is :mod:`zbroker.net.zap`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass, field

import zmq
import zmq.auth
from zmq.utils import z85

from zbroker.config import ClusterConfig, ConfigError
from zbroker.context import broker_principal

log = logging.getLogger(__name__)

#: A client key's name is its principal's name (``zbroker keys generate`` writes only these).
KEY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
#: A public key file is a few hundred bytes; anything much larger is not one.
MAX_KEY_FILE_BYTES = 4096
#: How often the key directory is rescanned (ms), and how often an unknown key may force it.
RESCAN_MS = 1000
FORCED_RESCAN_MS = 100


def derive_broker_keypair(cluster_secret: str, broker_id: int) -> tuple[bytes, bytes]:
    """Broker ``broker_id``'s CURVE key pair derived from the cluster secret: (public, secret), Z85.

    The secret key is HMAC-SHA256(cluster_secret, "zbroker broker key <id>"), 32 bytes (any
    32 bytes are a Curve25519 secret key); the public key is computed from it.
    """
    seed = hmac.new(cluster_secret.encode(), f"zbroker broker key {broker_id}".encode(), hashlib.sha256).digest()
    secret = z85.encode(seed)
    return zmq.curve_public(secret), secret


def user_id(principal: str, public_key: bytes | str) -> str:
    """The ZAP User-Id of an admitted connection: ``"<principal> <Z85 public key>"``."""
    key = public_key.decode("ascii") if isinstance(public_key, bytes) else public_key
    return f"{principal} {key}"


def split_user_id(value: str | None) -> tuple[str, str] | None:
    """(principal, Z85 key) of a User-Id made by :func:`user_id`, else None."""
    if not value:
        return None
    principal, sep, key = value.rpartition(" ")
    if not sep or len(key) != 40 or not principal:
        return None
    return principal, key


@dataclass(frozen=True)
class BrokerKeys:
    """This broker's key pair and every broker's public key (Z85 bytes)."""

    broker_id: int
    public: bytes
    secret: bytes
    publics: dict[int, bytes] = field(default_factory=dict)
    _by_key: dict[bytes, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {key: broker_principal(b) for b, key in self.publics.items()})

    def principal(self, key: bytes | str) -> str | None:
        """``Broker:N`` if ``key`` is broker N's public key, else None (public keys: no secret to time)."""
        return self._by_key.get(key.encode("ascii") if isinstance(key, str) else key)


def broker_keys(config: ClusterConfig, broker_id: int) -> BrokerKeys:
    """The keys broker ``broker_id`` uses on its CURVE sockets (see the module docstring).

    Raises:
        ConfigError: naming the key that is missing, unreadable or does not match.
    """
    where = f"{config.source}: " if config.source else ""
    index = [b.id for b in config.brokers].index(broker_id)
    entry = config.brokers[index]
    if config.security.curve:
        if entry.secret_key_file is None:
            raise ConfigError(f"{where}broker[{index}].secret_key_file: missing: with [security] curve = true the broker "
                              f"needs its own key pair (`zbroker keys generate broker{broker_id}`)")
        try:
            public, secret = zmq.auth.load_certificate(entry.secret_key_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}broker[{index}].secret_key_file: cannot read a key pair from "
                              f"{entry.secret_key_file!r}: {exc}") from None
        if secret is None:
            raise ConfigError(f"{where}broker[{index}].secret_key_file: {entry.secret_key_file!r} holds no secret key "
                              f"(give the NAME.key_secret file, not NAME.key)")
        if entry.public_key is not None and entry.public_key.encode() != public:
            raise ConfigError(f"{where}broker[{index}].public_key: does not match the key pair in "
                              f"{entry.secret_key_file!r} (its public key is {public.decode()})")
        publics = {b.id: b.public_key.encode() for b in config.brokers if b.public_key is not None}
        publics[broker_id] = public
        return BrokerKeys(broker_id, public, secret, publics)
    if config.security.cluster_secret is None:
        if len(config.brokers) > 1:
            raise ConfigError(config.inter_broker_problem() or "security.cluster_secret: missing")
        public, secret = zmq.curve_keypair()  # a single broker: nobody to talk to; any key will do
        return BrokerKeys(broker_id, public, secret, {broker_id: public})
    publics = {b.id: derive_broker_keypair(config.security.cluster_secret, b.id)[0] for b in config.brokers}
    public, secret = derive_broker_keypair(config.security.cluster_secret, broker_id)
    return BrokerKeys(broker_id, public, secret, publics)


class KeyDir:
    """The client keys of ``authorized_keys_dir``: Z85 public key -> ``User:NAME``.

    :meth:`refresh` rescans the directory when ``RESCAN_MS`` have passed since the last scan
    (or ``FORCED_RESCAN_MS`` with ``force``); a file unchanged since the last scan (same
    size, mtime and inode) is not read again.  Files that are no key (not ``NAME.key``, a
    bad name, unreadable, too large, not a certificate) are skipped with a log line, once per
    change.  A key found under two names admits neither (ambiguous: which principal?).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.keys: dict[str, str] = {}  # Z85 public key -> principal
        self._files: dict[str, tuple[tuple[int, int, int], str | None]] = {}  # name -> (stat, key or None)
        self._scanned_ms: int | None = None
        self._dir_problem: str | None = None
        self._ambiguous: set[str] = set()
        self._scanned_stamp: tuple[int, int] | None = None

    def principal(self, key: str | bytes, now_ms: int) -> str | None:
        """``User:NAME`` for an admitted key, else None (rescans first when due)."""
        self.refresh(now_ms)
        return self.keys.get(key.decode("ascii") if isinstance(key, bytes) else key)

    def admit(self, key: str | bytes, now_ms: int) -> str | None:
        """Like :meth:`principal`, but an unknown key forces a rescan (at most every
        ``FORCED_RESCAN_MS``): a key just added works at its first handshake."""
        found = self.principal(key, now_ms)
        if found is None and self.refresh(now_ms, force=True):
            found = self.keys.get(key.decode("ascii") if isinstance(key, bytes) else key)
        return found

    def refresh(self, now_ms: int, force: bool = False) -> bool:
        """Rescan if due (``force``: also if the directory changed, or ``FORCED_RESCAN_MS``
        passed); True if it did."""
        if self._scanned_ms is not None and now_ms - self._scanned_ms < RESCAN_MS:
            if not force:
                return False
            if now_ms - self._scanned_ms < FORCED_RESCAN_MS and self._dir_stamp() == self._scanned_stamp:
                return False
        self._scanned_ms = now_ms
        self.scan()
        return True

    def _dir_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino

    def scan(self) -> None:
        """Read the directory now."""
        self._scanned_stamp = self._dir_stamp()
        try:
            entries = list(os.scandir(self.path))
        except OSError as exc:
            problem = f"cannot read authorized_keys_dir {self.path!r}: {exc.strerror or exc}; no client key is admitted"
            if problem != self._dir_problem:
                log.error("%s", problem)
            self._dir_problem = problem
            self.keys, self._files = {}, {}
            return
        self._dir_problem = None
        files: dict[str, tuple[tuple[int, int, int], str | None]] = {}
        for entry in entries:
            if not entry.name.endswith(".key"):
                continue
            name = entry.name[:-4]
            try:
                st = entry.stat()
            except OSError:
                continue
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
            known = self._files.get(name)
            files[name] = known if known is not None and known[0] == stamp else (stamp, self._read(name, entry.path, st.st_size))
        by_key: dict[str, list[str]] = {}
        for name, (_stamp, key) in files.items():
            if key is not None:
                by_key.setdefault(key, []).append(name)
        keys, ambiguous = {}, set()
        for key, names in by_key.items():
            if len(names) == 1:
                keys[key] = f"User:{names[0]}"
                continue
            ambiguous.add(key)
            if key not in self._ambiguous:
                log.error("authorized_keys_dir %s: one public key in %s: admitted as none of them",
                          self.path, ", ".join(sorted(f"{n}.key" for n in names)))
        self._ambiguous = ambiguous
        added, removed = set(keys.values()) - set(self.keys.values()), set(self.keys.values()) - set(keys.values())
        if added or removed:
            log.info("authorized_keys_dir %s: %d client key(s)%s%s", self.path, len(keys),
                     f"; added {', '.join(sorted(added))}" if added else "",
                     f"; removed {', '.join(sorted(removed))}" if removed else "")
        self.keys, self._files = keys, files

    def _read(self, name: str, path: str, size: int) -> str | None:
        if not KEY_NAME.fullmatch(name):
            log.warning("authorized_keys_dir: skipped %s: %r is no key name (letters, digits, '.', '_', '-')", path, name)
            return None
        if size > MAX_KEY_FILE_BYTES:
            log.warning("authorized_keys_dir: skipped %s: %d bytes is too large for a public key file", path, size)
            return None
        try:
            public, _secret = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            log.warning("authorized_keys_dir: skipped %s: not a public key file (%s)", path, exc)
            return None
        if len(public) != 40:
            log.warning("authorized_keys_dir: skipped %s: its public-key is not 40 characters of Z85", path)
            return None
        return public.decode("ascii")
