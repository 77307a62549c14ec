"""`zbroker serve`: run one broker in the foreground.

The broker is imported in one place, inside the command: ``zbroker --help`` and
the other commands never load it, and ``zbroker serve`` never loads ``clients``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from zbroker.cli.common import BadUsage
from zbroker.config import (
    DEFAULT_DATA_DIR, DEFAULT_KAFKA_PORT, DEFAULT_PORT, ClusterConfig, ConfigError, is_wildcard_host, load_config, single_node_config,
)


def parse_hostport(value: str, what: str = "--listen") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise BadUsage(f"{what}: expected HOST:PORT, got {value!r}")
    return host, int(port)


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Cluster config file (TOML).")
@click.option("--broker-id", type=int, help="Which broker of the config file this is (default: the first).")
@click.option("--data-dir", help=f"Data directory (default: ./{DEFAULT_DATA_DIR}, or the config's data_dir).")
@click.option("--listen", help=f"HOST:PORT to listen on (default: 127.0.0.1:{DEFAULT_PORT}, or the config's).")
@click.option("--kafka-listen", help=f"HOST:PORT of the Kafka front door, or 'none' (default: 127.0.0.1:{DEFAULT_KAFKA_PORT}, "
                                       "or the config's kafka_host/kafka_port).")
@click.option("--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def serve(config_path: str | None, broker_id: int | None, data_dir: str | None, listen: str | None,
          kafka_listen: str | None, log_level: str) -> None:
    """Run a broker in the foreground until SIGTERM or Ctrl-C.

    Without --config: a single-node broker listening on 127.0.0.1:9555 (native) and
    127.0.0.1:9092 (Kafka) with its data under ./zbroker-data and the default topic
    settings (docs/operations.md).
    """
    from zbroker.server import serve as run_server, setup_logging

    if config_path is None:
        host, port = parse_hostport(listen) if listen else ("127.0.0.1", DEFAULT_PORT)
        kafka = kafka_address(kafka_listen, ("127.0.0.1", DEFAULT_KAFKA_PORT))
        config = single_node_config(data_dir or DEFAULT_DATA_DIR, host, port, kafka)
        broker_id = config.brokers[0].id
    else:
        config = load_config(config_path)
        if broker_id is None:
            broker_id = config.brokers[0].id
        entry = config.broker(broker_id)
        changes = {}
        if data_dir:
            changes["data_dir"] = data_dir
        if listen:
            host, port = parse_hostport(listen)
            changes.update(host=host, port=port)
        if kafka_listen:
            kafka = kafka_address(kafka_listen, None)
            changes.update(kafka_host=kafka[0] if kafka else None, kafka_port=kafka[1] if kafka else None)
        if changes:
            config = config.with_broker(entry.id, **changes)
    check_data_dir(config, broker_id, from_flag=bool(data_dir))
    setup_logging(log_level)
    run_server(config, broker_id)


def kafka_address(value: str | None, default: tuple[str, int] | None) -> tuple[str, int] | None:
    """``--kafka-listen``: HOST:PORT, or ``none`` for no Kafka listener."""
    if value is None:
        return default
    if value.lower() == "none":
        return None
    host, port = parse_hostport(value, "--kafka-listen")
    if is_wildcard_host(host):
        raise BadUsage(f"--kafka-listen: {host} is advertised to Kafka clients, who cannot connect to it; "
                       "give an address of this machine they can reach")
    return host.strip("[]"), port  # [::1]:9092 -> ::1, as Metadata advertises an IPv6 host


def check_data_dir(config: ClusterConfig, broker_id: int, from_flag: bool = False) -> None:
    """Create the broker's data_dir if needed and prove it writable (with an unnamed
    temporary file), before anything starts.

    Raises:
        ConfigError: one line naming the config file, ``broker[i].data_dir``, the broker id,
            the path and the reason.
    """
    index = [b.id for b in config.brokers].index(broker_id)
    path = config.brokers[index].data_dir
    what = "create"
    try:
        if os.path.exists(path) and not os.path.isdir(path):
            raise NotADirectoryError(0, "it exists and is not a directory")
        Path(path).mkdir(parents=True, exist_ok=True)
        what = "write"
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        where = f"{config.source}: " if config.source else ""
        given = " (from --data-dir)" if from_flag else ""
        raise ConfigError(f"{where}broker[{index}].data_dir: cannot {what} {path!r}{given} "
                          f"(broker id {broker_id}): {exc.strerror or exc}") from None
