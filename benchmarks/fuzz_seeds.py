"""Seed inputs of the TI-9 fuzz targets: a few valid inputs each, in the formats that
`benchmarks.fuzz_targets` reads, so the fuzzer starts past the checksums and the CBOR syntax.
Caller: `benchmarks.fuzz` (writes them into an empty corpus directory)."""

from __future__ import annotations

from benchmarks.fuzz_targets import CODES, PEER_KEY, WALL_MS
from codec import messages as M
from codec import seal as S
from transport import frames as F

_DIGEST = bytes(range(32))
_TOKEN = bytes(range(16))
_UPDATE = M.Update(
    id="alice#42", kind="grant", owner="alice", borrower="bob", image="sunset.jpg", delta=5,
    addressee="bob", grant=b"signed", created=1_767_225_600.25,
)  # fmt: skip
_ENTRY = M.UserEntry(
    user="bob", host="10.0.0.7", port=40001, token_digest=_DIGEST, sign_key=b"\x11" * 32,
    box_key=b"\x22" * 32, expires=1_767_225_615.0,
)  # fmt: skip
_MESSAGES: tuple[M.Message, ...] = (
    M.Ack(rid="alice#1"),
    M.Token(epoch=8, holder=2, seq=1234),
    M.ErrorReply(rid="alice#1", code="not_in_majority", message="node 3 sees 1", retryable=True),
    M.Join(rid="bob#0", user="bob", sign_key=b"\x11" * 32, box_key=b"\x22" * 32, stamp=1.7e9,
           proof=b"\x33" * 64),
    M.PostUpdate(rid="alice#44", user="alice", token=_TOKEN, update=_UPDATE),
    M.DirectoryReply(rid="alice#2", users=(_ENTRY,)),
    M.ImageRequest(rid="bob#7", user="bob", token=_TOKEN, image="sunset.jpg", views=2, days=2.5),
    M.ForgetUpdates(ids=("alice#42", "bob#17"), user="bob", session=bytes(16)),
)


def _frames() -> list[bytes]:
    crc, hmac = F.CrcFramer(), F.HmacFramer(PEER_KEY)
    data_crc, data_hmac = (
        F.pack(framer, F.DATA, sender=sender, type_code=1, epoch=WALL_MS, msg_id=7, frag_size=64,
               block_size=4, total=10, payload=b"0123456789")
        for framer, sender in ((crc, 0), (hmac, 2))
    )  # fmt: skip
    ack = F.pack(crc, F.ACK, msg_id=7, total=1, payload=F.ack_payload(8, b"\x0f"))
    return [b"\0" + data_crc, b"\1" + data_crc[:-4], b"\1" + ack[:-4], b"\2" + data_hmac,
            b"\3" + data_hmac[:-16], b"\4" + F.ack_payload(8, b"\xff\x01")]  # fmt: skip


def _built(kind: int, payload: bytes, **sel: int) -> bytes:
    """Op 1 of a fragments input: a built datagram with the usual field choices (selector 0)
    except the selectors in `sel` (field name -> selector byte)."""
    names = (
        "rare flags sender type_code epoch msg_id frag_index frag_size block_size total "
        "seq0 seq1 seq2 seq3 nonce echo"
    )
    fields = bytes(sel.get(n, 0) for n in names.split())
    return bytes([1]) + fields + bytes([kind, len(payload)]) + payload


def _fragments() -> list[bytes]:
    """Per endpoint mode: one whole 64-byte message, the first fragment of a 200-byte one, an ACK
    of the endpoint's own message, then deliver and step the clock 256 ms (fuzz_targets._Script)."""
    whole = _built(0, bytes(64))
    first = _built(0, bytes(64), msg_id=2, total=1)
    ack = _built(1, F.ack_payload(0, b"\x0f"), msg_id=1)  # its first message has id 1
    return [bytes([mode]) + whole + first + ack + b"\x03\x01\x00" for mode in range(3)]


def _messages() -> list[bytes]:
    return [bytes([CODES.index(msg.TYPE)]) + M.encode(msg) for msg in _MESSAGES]


def _unseal() -> list[bytes]:
    grant = S.Grant("alice", "bob", "sunset.jpg", 3)
    sealed = S.seal(b"a small payload", grant=grant)
    built = bytes([1]) + bytes([0, 16]) + bytes(range(16)) + bytes(40)  # 16-byte payload, valid
    return [b"\0" + sealed, built, bytes([1]) + bytes(60)]


def seed_inputs(target: str) -> list[bytes]:
    """The seed inputs of `target` (one of fuzz_targets.TARGETS)."""
    makers = {"frames": _frames, "fragments": _fragments, "messages": _messages,
              "unseal": _unseal}  # fmt: skip
    return makers[target]()
