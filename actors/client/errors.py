"""Errors of the client package, shared by the session, sharing, grants and the shell."""

from __future__ import annotations


class SessionError(Exception):
    """A command failed for a reason the user should read (`code` for scripts)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


__all__ = ["SessionError"]
