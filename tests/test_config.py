"""The cluster file loader: defaults, and a wrong value reported by key and reason."""

import pytest

import config
from config import ConfigError


def _raw(**sections: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "cluster": {"secret": "x" * 40},
        "nodes": [{"id": 1, "host": "127.0.0.1", "client_port": 1, "peer_port": 2}],
    }
    raw.update(sections)
    return raw


def test_default_file_loads_three_loopback_nodes() -> None:
    cfg = config.load()
    assert [n.id for n in cfg.nodes] == [1, 2, 3]
    assert cfg.majority == 2
    assert cfg.seal.bits_per_channel == 2
    assert cfg.transport.fragment_size + 64 <= 1472  # fits a 1500-byte MTU with our header


def test_missing_sections_take_defaults() -> None:
    cfg = config.from_dict(_raw())
    assert cfg.transport.max_message == 64 * 1024 * 1024
    assert cfg.client.request_deadline_s == 60.0


@pytest.mark.parametrize(
    ("section", "value", "key"),
    [
        ("seal", {"bits_per_channel": 5}, "seal.bits_per_channel"),
        ("seal", {"bits_per_channel": True}, "seal.bits_per_channel"),
        ("transport", {"fragment_size": "big"}, "transport.fragment_size"),
        ("transport", {"nope": 1}, "transport.nope"),
        ("failures", {"enabled": 1}, "failures.enabled"),
        ("bogus", {}, "bogus"),
    ],
)
def test_wrong_value_names_key(section: str, value: object, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.from_dict(_raw(**{section: value}))
    assert err.value.key == key


def test_short_secret_refused() -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        config.from_dict(_raw(cluster={"secret": "short"}))


def test_sample_secret_refused_off_loopback() -> None:
    raw = _raw(cluster={"secret": config.SAMPLE_SECRET})
    raw["nodes"] = [{"id": 1, "host": "10.1.2.3", "client_port": 1, "peer_port": 2}]
    with pytest.raises(ConfigError) as err:
        config.from_dict(raw)
    assert err.value.key == "cluster.secret"


def test_duplicate_node_ids_refused() -> None:
    raw = _raw()
    raw["nodes"] = [
        {"id": 1, "host": "127.0.0.1", "client_port": 1, "peer_port": 2},
        {"id": 1, "host": "127.0.0.1", "client_port": 3, "peer_port": 4},
    ]
    with pytest.raises(ConfigError, match="unique"):
        config.from_dict(raw)
