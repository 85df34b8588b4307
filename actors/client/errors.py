"""Errors of the client package, shared by the session, sharing, grants and the shell."""

from __future__ import annotations


class SessionError(Exception):
    """A command failed for a reason the user should read (`code` for scripts)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class HandoffError(Exception):
    """The local socket of a client home (actors.client.local_socket): a frame the other end got
    wrong (`bad_frame`), a socket or folder not private to this user (`not_private`), a home
    another live client already listens on (`busy`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


__all__ = ["HandoffError", "SessionError"]
