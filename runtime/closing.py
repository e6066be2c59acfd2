"""Closing a connection we are done with, without resetting it.

Closing a socket while bytes the client sent after its last request sit
unread (grpcio's WINDOW_UPDATEs while it reads a large answer, a PING, a
pipelined request) makes the kernel reset the connection, and a reset drops
whatever of our last answer it has not yet sent. So both transports, once
they have said everything, half-close instead, read and discard until the
client closes, and close after LINGER_S at the latest."""

from __future__ import annotations

import asyncio
from typing import Any

LINGER_S = 2.0


def close_gently(transport: Any) -> asyncio.TimerHandle:
    """Half-close `transport` (where it can: TLS cannot) and close it after
    LINGER_S; the caller keeps reading and discards what arrives, and cancels
    the returned timer if the client closes first."""
    if transport.can_write_eof():
        transport.write_eof()  # sent after everything already written
    return asyncio.get_running_loop().call_later(LINGER_S, transport.close)
