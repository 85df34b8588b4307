"""The borrower's grant as a sealed image's header carries it (codec.seal), on its own: the
client's sharing code (codec.sharecrypt) uses it without loading numpy and Pillow, which every
client start would pay (~0.1 s) for commands that never touch an image.
Callers: codec.seal (re-exports it), codec.sharecrypt, actors.client.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from codec.errors import SealError
from codec.names import InvalidName, check_name

MAX_VIEWS = 2**31 - 1
BLOB_MAX = 3840
_GRANT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Grant:
    """The borrower's right carried in the header: owner, borrower, image name, views left.

    `blob` is opaque bytes for the signed-grant extension (at most BLOB_MAX). Building an invalid
    grant raises SealError. Encoded by `to_bytes` into at most GRANT_CAPACITY bytes:
    version u8, then owner, borrower, image each as u8 length + ASCII, views u32, blob u16 + bytes.
    """

    owner: str
    borrower: str
    image: str
    views: int
    blob: bytes = b""

    def __post_init__(self) -> None:
        try:
            for what in ("owner", "borrower", "image"):
                check_name(getattr(self, what), what)
        except InvalidName as exc:
            raise SealError(f"grant: {exc}") from None
        if type(self.views) is not int or not 0 <= self.views <= MAX_VIEWS:
            raise SealError(f"grant: views must be an int 0..{MAX_VIEWS}, not {self.views!r}")
        if type(self.blob) is not bytes or len(self.blob) > BLOB_MAX:
            raise SealError(f"grant: blob must be bytes of at most {BLOB_MAX}")

    def to_bytes(self) -> bytes:
        parts = [bytes([_GRANT_VERSION])]
        for name in (self.owner, self.borrower, self.image):
            raw = name.encode("ascii")
            parts += [bytes([len(raw)]), raw]
        parts += [struct.pack(">IH", self.views, len(self.blob)), self.blob]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Grant:
        """Strict inverse of to_bytes; raises SealError for anything else."""
        try:
            if data[0] != _GRANT_VERSION:
                raise SealError(f"grant: unknown version {data[0]}")
            pos, names = 1, []
            for _ in range(3):
                n = data[pos]
                names.append(data[pos + 1 : pos + 1 + n].decode("ascii"))
                pos += 1 + n
            views, nblob = struct.unpack_from(">IH", data, pos)
            blob = data[pos + 6 : pos + 6 + nblob]
        except (IndexError, struct.error, UnicodeDecodeError):
            raise SealError("grant: truncated or not ASCII") from None
        if pos + 6 + nblob != len(data):
            raise SealError("grant: length does not match its fields")
        return cls(names[0], names[1], names[2], views, bytes(blob))
