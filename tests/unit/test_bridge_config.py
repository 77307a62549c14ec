"""[[bridge]] and [[mirror]] tables: defaults, and every mistake named by table and key."""

from __future__ import annotations

import pytest

from zbroker.config import ConfigError, parse_config

pytestmark = pytest.mark.timeout(30)

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


def config(*tables: str, security: str = "") -> dict:
    import tomllib
    text = "\n".join([security, "[[broker]]\nid = 1\n[[broker]]\nid = 2\nport = 9655\n"
                      '[security]\ncluster_secret = "' + "s" * 40 + '"' if not security else "[[broker]]\nid = 1", *tables])
    return parse_config(tomllib.loads(text), "c.toml")


def test_an_ingest_bridge_with_its_defaults():
    (b,) = config('[[bridge]]\nname = "sensors"\nsocket = "pull"\nendpoint = "tcp://127.0.0.1:7001"\ntopic = "s"').bridges
    assert (b.ingest, b.bind, b.broker, b.acks, b.hwm, b.key_frame, b.subscribe) == (True, True, 1, -1, 1000, None, ("",))
    assert b.principal == "Bridge:sensors" and b.uses_curve(True) and not b.uses_curve(False)
    (s,) = config('[[bridge]]\nname = "x"\nsocket = "sub"\nendpoint = "tcp://h:1"\ntopic_from = "frame0"\n'
                  'key_from = "frame1"\nsubscribe = ["a.", "b."]\nacks = 1\nbroker = 2').bridges
    assert (s.bind, s.broker, s.acks, s.key_frame, s.subscribe) == (False, 2, 1, 1, ("a.", "b."))


def test_an_egress_bridge_and_a_mirror():
    cfg = config('[[bridge]]\nname = "out"\nsocket = "pub"\nendpoint = "tcp://*:7002"\ntopics = ["a", "b"]\nreplay = 10',
                 '[[mirror]]\nname = "m"\nsource = "kafka://h1:9092,h2:9092"\ntopics = "plant\\\\..*"\nprefix = "a."\n'
                 'source_config = {"security.protocol" = "SASL_SSL"}')
    (b,), (m,) = cfg.bridges, cfg.mirrors
    assert (b.ingest, b.topics, b.start, b.replay) == (False, ("a", "b"), "latest", 10)
    (push,) = config('[[bridge]]\nname = "work"\nsocket = "push"\nendpoint = "tcp://*:7003"\ntopics = ["a"]').bridges
    assert push.start == "committed"  # a push bridge resumes where it was: at-least-once by default
    assert (m.scheme, m.bootstrap, m.prefix, m.refresh_ms) == ("kafka", "h1:9092,h2:9092", "a.", 5000)
    assert m.matches("plant.x") and not m.matches("xplant.x") and m.target("plant.x") == "a.plant.x"


@pytest.mark.parametrize("table, message", [
    ('socket = "pull"\nendpoint = "tcp://h:1"\ntopic = "t"', "bridge[0].name: missing"),
    ('name = "b"\nsocket = "dealer"\nendpoint = "tcp://h:1"', "bridge[0].socket: must be one of 'pull'"),
    ('name = "b"\nsocket = "pull"\nendpoint = "h:1"\ntopic = "t"', "bridge[0].endpoint: must be a ZeroMQ endpoint"),
    ('name = "b"\nsocket = "pull"\nendpoint = "tcp://h:1"', "set exactly one of topic"),
    ('name = "b"\nsocket = "pull"\nendpoint = "tcp://h:1"\ntopic = "t"\ntopic_from = "frame0"', "set exactly one of topic"),
    ('name = "b"\nsocket = "pull"\nendpoint = "tcp://h:1"\ntopic = "t"\nreplay = 3', "replay: not a key of an ingest bridge"),
    ('name = "b"\nsocket = "pub"\nendpoint = "tcp://h:1"\ntopics = ["t"]\nacks = 1', "acks: not a key of an egress bridge"),
    ('name = "b"\nsocket = "pull"\nendpoint = "tcp://h:1"\ntopic = "t"\nacks = 2', 'acks: must be 0, 1 or "all"'),
    ('name = "b"\nsocket = "pull"\nendpoint = "tcp://h:1"\ntopic = "t"\nbroker = 9', "broker: no broker with id 9"),
    ('name = "b"\nsocket = "pull"\nendpoint = "tcp://h:1"\ntopic = "t"\nkey_from = "key"', 'key_from: must be a frame'),
    ('name = "b"\nsocket = "sub"\nendpoint = "tcp://h:1"\ntopic_from = "frame0"\nkey_from = "frame0"', "frame0 names the topic"),
    ('name = "b"\nsocket = "pull"\nendpoint = "tcp://h:1"\ntopic = "t"\nsubscribe = ["a"]', "a pull bridge has no subscriptions"),
    ('name = "b"\nsocket = "sub"\nendpoint = "tcp://h:1"\ntopic = "t"\nsubscribe = []', "subscribe: empty: a sub bridge with no"),
    ('name = "b"\nsocket = "xsub"\nendpoint = "tcp://h:1"\ntopic = "t"\nsubscribe = []', "subscribe: empty: a xsub bridge"),
    ('name = "b"\nsocket = "push"\nendpoint = "tcp://h:1"\ntopics = ["t"]\nreplay = 1', "only a pub bridge replays"),
    ('name = "b"\nsocket = "push"\nendpoint = "tcp://h:1"', "topics: missing"),
    ('name = "b"\nsocket = "push"\nendpoint = "tcp://h:1"\ntopics = ["t"]\nstart = "now"', "start: must be one of"),
    ('name = "b"\nsocket = "push"\nendpoint = "tcp://h:1"\ntopics = ["t"]\ncurve = true', "needs [security] curve = true"),
    ('name = "b"\nsocket = "pull"\nendpoint = "tcp://h:1"\ntopic = "t"\nserver_key = "' + KEY + '"', "only a connecting bridge"),
])
def test_bridge_mistakes_name_the_key(table, message):
    with pytest.raises(ConfigError) as err:
        config("[[bridge]]\n" + table)
    assert message in str(err.value) and str(err.value).startswith("c.toml: bridge[0]")


@pytest.mark.parametrize("table, message", [
    ('name = "m"\ntopics = "x"', "mirror[0].source: missing"),
    ('name = "m"\nsource = "http://h:1"\ntopics = "x"', "source: must be zbroker://HOST:PORT"),
    ('name = "m"\nsource = "kafka://h"\ntopics = "x"', "source: must be zbroker://HOST:PORT"),
    ('name = "m"\nsource = "kafka://h:1"\ntopics = "("', "topics: is not a valid regular expression"),
    ('name = "m"\nsource = "kafka://h:1"\ntopics = "x"\nprefix = "a b"', "prefix: must be a string of letters"),
    ('name = "m"\nsource = "zbroker://h:1"\ntopics = "x"\nsource_config = {a = "b"}', "librdkafka properties are for kafka://"),
    ('name = "m"\nsource = "zbroker://h:1"\ntopics = "x"\ncurve_server_key = "' + KEY + '"', "go together"),
])
def test_mirror_mistakes_name_the_key(table, message):
    with pytest.raises(ConfigError) as err:
        config("[[mirror]]\n" + table)
    assert message in str(err.value)


def test_names_are_unique_across_bridges_and_mirrors():
    with pytest.raises(ConfigError, match="mirror\\[0\\].name: 'x' is already the name"):
        config('[[bridge]]\nname = "x"\nsocket = "pull"\nendpoint = "tcp://h:1"\ntopic = "t"',
               '[[mirror]]\nname = "x"\nsource = "zbroker://h:1"\ntopics = "t"')


def test_a_connecting_curve_bridge_needs_the_servers_key(tmp_path):
    security = f'[security]\ncurve = true\nauthorized_keys_dir = "{tmp_path}"'
    with pytest.raises(ConfigError, match="server_key: missing"):
        config('[[bridge]]\nname = "b"\nsocket = "sub"\nendpoint = "tcp://h:1"\ntopic = "t"', security=security)
    (b,) = config('[[bridge]]\nname = "b"\nsocket = "sub"\nendpoint = "tcp://h:1"\ntopic = "t"\ncurve = false',
                  security=security).bridges
    assert not b.uses_curve(True)
    (b,) = config(f'[[bridge]]\nname = "b"\nsocket = "sub"\nendpoint = "tcp://h:1"\ntopic = "t"\nserver_key = "{KEY}"',
                  security=security).bridges
    assert b.server_key == KEY.encode()


def test_replay_is_at_most_ten_thousand_records():
    """A replay holds up to N records per partition while it is read: N is bounded."""
    table = '[[bridge]]\nname = "out"\nsocket = "pub"\nendpoint = "tcp://*:7002"\ntopics = ["a"]\nreplay = '
    assert config(table + "10000").bridges[0].replay == 10_000
    with pytest.raises(ConfigError, match=r"bridge\[0\]\.replay: must be an integer from 0 to 10000, got 10001"):
        config(table + "10001")
