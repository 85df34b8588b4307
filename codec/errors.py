"""Exceptions of the codec package.

`CodecError` is the one base class of the package: callers that want "any codec failure" catch it.
`DecodeError` means "this message is not acceptable": a peer sent garbage, or local code built a
message with an invalid field (one rule for both). `codec.names.InvalidName` and `codec.seal`'s
errors also derive from `CodecError`.
"""

from __future__ import annotations


class CodecError(Exception):
    """Base of every exception raised by the codec package."""


class DecodeError(CodecError, ValueError):
    """A body or field is not acceptable.

    `reason` says why in words; `field` names the offending field as a path ("rid",
    "update.delta", "users[3].port"), or is None when the body as a whole is wrong (size, CBOR
    syntax, trailing bytes, unknown type).
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        where = f"field {field}: " if field else ""
        super().__init__(f"{where}{reason}")
        self.reason = reason
        self.field = field

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, str | None]]:
        return (type(self), (self.reason, self.field))


class SealError(CodecError, ValueError):
    """A sealed image cannot be made or read: the message says why. Raised by codec.png,
    codec.covers, codec.grant and codec.seal (exported there as codec.seal.SealError)."""
