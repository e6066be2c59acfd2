"""Talking to the sibling worker processes of one supervisor over their
private unix sockets: their share of the statistics (so the statistics
extension stays cumulative however many workers share the ports), and
explicit loads and unloads (so every worker serves the same models)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

from mlserve.errors import InternalError
from mlserve.runtime.statistics import ModelStatistics

VersionStatistics = tuple[str, str, ModelStatistics]
_TIMEOUT_S = 5.0


async def _get_json(
    socket_path: str, target: str, *, method: str = "GET", timeout_s: float = _TIMEOUT_S
) -> Any:
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(socket_path), _TIMEOUT_S)
    try:
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: worker\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        raw = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        try:
            message = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            message = head.splitlines()[0].decode(errors="replace") if head else "no answer"
        raise InternalError(f"a sibling worker answered: {message}")
    return json.loads(body) if body else None


async def peer_statistics(peers: list[str], name: str, version: str) -> list[VersionStatistics]:
    """Each reachable peer's statistics (a restarting peer is skipped)."""
    query = urlencode({"model": name, "version": version})
    answers = await asyncio.gather(
        *(_get_json(path, f"/statistics?{query}") for path in peers), return_exceptions=True
    )
    out: list[VersionStatistics] = []
    for answer in answers:
        if isinstance(answer, BaseException):
            continue
        for item in answer:
            out.append((item["name"], item["version"], ModelStatistics.from_json(item["stats"])))
    return out


def merge(parts: list[VersionStatistics]) -> list[VersionStatistics]:
    """Sum the counters of the same model version, in name/version order."""
    merged: dict[tuple[str, str], ModelStatistics] = {}
    for name, version, stats in parts:
        total = merged.get((name, version))
        if total is None:
            merged[(name, version)] = ModelStatistics.from_json(stats.to_json())
        else:
            total.merge(stats)
    return [
        (n, v, s) for (n, v), s in sorted(merged.items(), key=lambda kv: (kv[0][0], int(kv[0][1])))
    ]


async def peer_control(peers: list[str], action: str, name: str) -> None:
    """Have every sibling worker load or unload `name` too (explicit mode);
    raises naming the first that failed."""
    results = await asyncio.gather(
        *(
            _get_json(path, f"/control/{action}/{name}", method="POST", timeout_s=600)
            for path in peers
        ),
        return_exceptions=True,
    )
    for path, result in zip(peers, results, strict=True):
        if isinstance(result, BaseException):
            raise InternalError(f"{action} of '{name}' failed on worker {path}: {result}")
