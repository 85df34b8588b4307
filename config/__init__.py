"""Cluster configuration: `config/cluster.toml` loaded with tomllib and checked key by key.

A wrong value raises `ConfigError(key, reason)`; entry points print it as one line and exit 2,
never a traceback. Every knob has a default (the dataclass field default), so a cluster file may
name only the nodes and the secret.

Units are in the key names: `_ms` milliseconds, `_s` seconds, sizes in bytes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).with_name("cluster.toml")
CONFIG_ENV = "VEILSHARE_CONFIG"  # the cluster file when no --config is given
SAMPLE_SECRET = "veilshare-sample-secret-for-loopback-only-0123456789abcdef"
MIN_SECRET_BYTES = 32


class ConfigError(Exception):
    """A configuration value is wrong: `key` names it (dotted), `reason` says why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config {key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NodeConfig:
    id: int
    host: str
    client_port: int
    peer_port: int

    @property
    def client_addr(self) -> tuple[str, int]:
        return (self.host, self.client_port)

    @property
    def peer_addr(self) -> tuple[str, int]:
        return (self.host, self.peer_port)


@dataclass(frozen=True, slots=True)
class TransportConfig:
    fragment_size: int = 1400
    loopback_fragment_size: int = 0  # 0: fragment_size to loopback destinations too
    block_size: int = 32
    window_blocks: int = 32
    rto_floor_ms: int = 20
    rto_ceiling_ms: int = 1000
    send_deadline_s: float = 5.0
    max_message: int = 64 * 1024 * 1024
    control_max_body: int = 64 * 1024
    max_partial_per_sender: int = 64
    max_reassembly_bytes: int = 256 * 1024 * 1024
    partial_idle_s: float = 30.0
    socket_buffer: int = 8 * 1024 * 1024
    busy_poll_us: int = 1000
    poll_after_io_us: int = 2000
    ack_delay_ms: float = 5.0


@dataclass(frozen=True, slots=True)
class ElectionConfig:
    heartbeat_interval_ms: int = 200
    failure_timeout_ms: int = 1000
    answer_timeout_ms: int = 300
    done_hold_ms: int = 0  # a winner's Dones wait this long to leave together (encrypt_actor)
    bind_votes: bool = True  # a node's first Election is its vote for the top key (election core)


@dataclass(frozen=True, slots=True)
class FailuresConfig:
    enabled: bool = True
    max_down_s: float = 20.0
    mean_up_s: float = 30.0
    token_hold_s: float = 2.0


@dataclass(frozen=True, slots=True)
class DirectoryConfig:
    ttl_s: float = 15.0
    heartbeat_s: float = 3.0


@dataclass(frozen=True, slots=True)
class EncoderConfig:
    pool_size: int = 2


@dataclass(frozen=True, slots=True)
class SealConfig:
    bits_per_channel: int = 2
    min_cover_width: int = 640
    min_cover_height: int = 480
    zlib_level: int = 1


@dataclass(frozen=True, slots=True)
class ClientConfig:
    request_deadline_s: float = 60.0
    retry_s: float = 2.0
    max_views_per_grant: int = 10


@dataclass(frozen=True, slots=True)
class Config:
    secret: str
    nodes: tuple[NodeConfig, ...]
    transport: TransportConfig = field(default_factory=TransportConfig)
    election: ElectionConfig = field(default_factory=ElectionConfig)
    failures: FailuresConfig = field(default_factory=FailuresConfig)
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    seal: SealConfig = field(default_factory=SealConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    path: Path | None = None

    def node(self, node_id: int) -> NodeConfig:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise ConfigError("nodes", f"no node with id {node_id}")

    @property
    def majority(self) -> int:
        """Nodes (self included) a node must see to serve: floor(N/2) + 1."""
        return len(self.nodes) // 2 + 1

    def secret_bytes(self) -> bytes:
        return self.secret.encode("utf-8")


# Ranges checked for each numeric knob: (min, max) inclusive.
_RANGES: dict[str, tuple[float, float]] = {
    "transport.fragment_size": (64, 65000),
    "transport.loopback_fragment_size": (0, 65000),
    "transport.block_size": (1, 512),
    "transport.window_blocks": (1, 256),
    "transport.rto_floor_ms": (1, 60_000),
    "transport.rto_ceiling_ms": (1, 600_000),
    "transport.send_deadline_s": (0.05, 3600),
    "transport.max_message": (1024, 1 << 34),
    "transport.control_max_body": (256, 1 << 24),
    "transport.max_partial_per_sender": (1, 100_000),
    "transport.max_reassembly_bytes": (1024, 1 << 36),
    "transport.partial_idle_s": (0.1, 3600),
    "transport.socket_buffer": (65536, 1 << 30),
    "transport.busy_poll_us": (0, 100_000),
    "transport.poll_after_io_us": (0, 100_000),
    "transport.ack_delay_ms": (0, 1000),
    "election.heartbeat_interval_ms": (10, 60_000),
    "election.failure_timeout_ms": (20, 600_000),
    "election.answer_timeout_ms": (1, 60_000),
    "election.done_hold_ms": (0, 10_000),
    "failures.max_down_s": (0.1, 3600),
    "failures.mean_up_s": (0.1, 86_400),
    "failures.token_hold_s": (0.01, 3600),
    "directory.ttl_s": (0.5, 86_400),
    "directory.heartbeat_s": (0.1, 3600),
    "encoder.pool_size": (1, 64),
    "seal.bits_per_channel": (1, 4),
    "seal.min_cover_width": (16, 16384),
    "seal.min_cover_height": (16, 16384),
    "seal.zlib_level": (0, 9),
    "client.request_deadline_s": (0.1, 3600),
    "client.retry_s": (0.01, 600),
    "client.max_views_per_grant": (1, 1_000_000),
}


def _section(cls: type, name: str, raw: Any) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(name, "must be a table")
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{name}.{key}"
        if key not in known:
            raise ConfigError(dotted, "unknown key")
        default = known[key].default
        if isinstance(default, bool):
            if type(value) is not bool:
                raise ConfigError(dotted, f"must be true or false, not {value!r}")
        elif isinstance(default, int):
            if type(value) is not int:
                raise ConfigError(dotted, f"must be an integer, not {value!r}")
        elif isinstance(default, float):
            if type(value) not in (int, float):
                raise ConfigError(dotted, f"must be a number, not {value!r}")
            value = float(value)
        lo_hi = _RANGES.get(dotted)
        if lo_hi is not None and not lo_hi[0] <= value <= lo_hi[1]:
            raise ConfigError(dotted, f"must be between {lo_hi[0]} and {lo_hi[1]}, not {value!r}")
        values[key] = value
    return cls(**values)


def _port(key: str, value: Any) -> int:
    if type(value) is not int or not 0 <= value <= 65535:
        raise ConfigError(key, f"must be a port number 0..65535, not {value!r}")
    return value


def _nodes(raw: Any) -> tuple[NodeConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("nodes", "at least one [[nodes]] entry is needed")
    nodes: list[NodeConfig] = []
    for i, entry in enumerate(raw):
        key = f"nodes[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(key, "must be a table")
        extra = set(entry) - {"id", "host", "client_port", "peer_port"}
        if extra:
            raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key")
        node_id = entry.get("id")
        if type(node_id) is not int or not 1 <= node_id <= 255:
            raise ConfigError(f"{key}.id", f"must be an integer 1..255, not {node_id!r}")
        host = entry.get("host")
        try:
            if not isinstance(host, str):
                raise ValueError(host)
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"{key}.host", f"must be an IP address, not {host!r}") from None
        nodes.append(
            NodeConfig(
                node_id,
                host,
                _port(f"{key}.client_port", entry.get("client_port")),
                _port(f"{key}.peer_port", entry.get("peer_port")),
            )
        )
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise ConfigError("nodes", f"node ids must be unique, got {ids}")
    return tuple(sorted(nodes, key=lambda n: n.id))


def check_secret(cfg: Config) -> None:
    """Refuse a short secret, or the sample secret on a non-loopback address (TS-5)."""
    if len(cfg.secret_bytes()) < MIN_SECRET_BYTES:
        raise ConfigError("cluster.secret", f"must be at least {MIN_SECRET_BYTES} bytes")
    if cfg.secret == SAMPLE_SECRET:
        for n in cfg.nodes:
            if not ipaddress.ip_address(n.host).is_loopback:
                raise ConfigError(
                    "cluster.secret",
                    f"the sample secret may only be used on loopback (node {n.id} is on {n.host}); "
                    'generate one: python -c "import secrets; print(secrets.token_hex(32))"',
                )


def from_dict(raw: dict[str, Any], path: Path | None = None) -> Config:
    """Build and check a Config from parsed TOML. Raises ConfigError."""
    known = {"cluster", "nodes"} | {
        f.name for f in dataclasses.fields(Config) if f.name not in ("secret", "nodes", "path")
    }
    for key in raw:
        if key not in known:
            raise ConfigError(key, "unknown section")
    cluster = raw.get("cluster", {})
    if not isinstance(cluster, dict):
        raise ConfigError("cluster", "must be a table")
    secret = cluster.get("secret")
    if not isinstance(secret, str):
        raise ConfigError("cluster.secret", "missing (a string of at least 32 bytes)")
    cfg = Config(
        secret=secret,
        nodes=_nodes(raw.get("nodes")),
        transport=_section(TransportConfig, "transport", raw.get("transport")),
        election=_section(ElectionConfig, "election", raw.get("election")),
        failures=_section(FailuresConfig, "failures", raw.get("failures")),
        directory=_section(DirectoryConfig, "directory", raw.get("directory")),
        encoder=_section(EncoderConfig, "encoder", raw.get("encoder")),
        seal=_section(SealConfig, "seal", raw.get("seal")),
        client=_section(ClientConfig, "client", raw.get("client")),
        path=path,
    )
    t = cfg.transport
    if t.rto_floor_ms > t.rto_ceiling_ms:
        raise ConfigError("transport.rto_floor_ms", "must not exceed transport.rto_ceiling_ms")
    if 0 < t.loopback_fragment_size < 64:
        raise ConfigError("transport.loopback_fragment_size", "must be 0 (off) or at least 64")
    if t.max_message > t.max_reassembly_bytes:
        raise ConfigError("transport.max_message", "must not exceed transport.max_reassembly_bytes")
    check_secret(cfg)
    return cfg


def load(path: str | Path | None = None) -> Config:
    """Load a cluster file: `path`, else the file named by $VEILSHARE_CONFIG when set, else
    config/cluster.toml. Raises ConfigError."""
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    p = Path(path) if path is not None else DEFAULT_PATH
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(p), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), f"not valid TOML: {exc}") from None
    return from_dict(raw, p)
