"""`mlserve rollout status|start|pause|resume|promote|abort MODEL`: the rollout
admin API of a running server (`--url` is its HTTP endpoint), for people
(a summary) and scripts (`--json`: the rollout as the API returns it, its
state under the key `state`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

ACTIONS = ("status", "start", "pause", "resume", "promote", "abort")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("rollout", help="start, watch and steer a canary rollout")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("model", nargs="?", help="the model (status without it: every rollout)")
    p.add_argument("--canary", type=int, help="start: the version to roll out")
    p.add_argument("--stable", type=int, help="start: the version it is judged against")
    p.add_argument("--url", default="localhost:8000", help="the server's HTTP endpoint")
    p.add_argument(
        "--token", help="the server's admin token (default: $MLSERVE_ADMIN_TOKEN, or none)"
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON")


class RolloutCommandError(Exception):
    """What the server or the command line refused, worded for the user."""


def run(args: argparse.Namespace) -> int:
    try:
        doc = _call(args)
    except RolloutCommandError as exc:
        print(f"mlserve rollout {args.action}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    elif "rollouts" in doc:
        for rollout in doc["rollouts"]:
            print(_summary(rollout))
        if not doc["rollouts"]:
            print("no rollouts")
    else:
        print(_summary(doc))
    return 0


def _call(args: argparse.Namespace) -> dict[str, Any]:
    if args.action != "status" and not args.model:
        raise RolloutCommandError("name the model")
    base = args.url if "://" in args.url else f"http://{args.url}"
    path = "/v2/rollouts" + (f"/{args.model}" if args.model else "")
    body = None
    if args.action != "status":
        path += f"/{args.action}"
        payload: dict[str, Any] = {}
        if args.action == "start":
            if args.canary is None:
                raise RolloutCommandError("--canary is required: the version to roll out")
            payload = {"canary": args.canary, "stable": args.stable}
        body = json.dumps(payload).encode()
    request = urllib.request.Request(base + path, data=body, method="POST" if body else "GET")
    request.add_header("Content-Type", "application/json")
    token = args.token or os.environ.get("MLSERVE_ADMIN_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as error:
        with error:
            try:
                message = json.loads(error.read()).get("error", "")
            except ValueError:
                message = ""
        raise RolloutCommandError(f"{error.code}: {message or error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise RolloutCommandError(f"cannot reach {base}: {error}") from None


def _summary(rollout: dict[str, Any]) -> str:
    steps = rollout.get("steps", [])
    step = rollout.get("step")
    where = (
        f"step {step + 1}/{len(steps)} ({steps[step]})"
        if step is not None and step < len(steps)
        else ""
    )
    weights = rollout.get("weights", {})
    requests = rollout.get("requests", {})
    lines = [
        f"{rollout['model']}: {rollout['state']} {where}".rstrip(),
        f"  stable {rollout.get('stable')}  canary {rollout.get('canary')}  "
        f"canary weight {weights.get('canary', 0):.0%}  mirrored {weights.get('mirror', 0):.0%}",
        f"  this step: stable {requests.get('stable', 0)} requests "
        f"({requests.get('stable_errors', 0)} failed), canary {requests.get('canary', 0)} "
        f"({requests.get('canary_errors', 0)} failed), mirrored compared "
        f"{requests.get('mirrored_compared', 0)} (agreed {requests.get('mirrored_agreed', 0)})",
    ]
    if rollout.get("reason"):
        lines.append(f"  reason: {rollout['reason']}")
    verdict = rollout.get("last_verdict")
    if verdict:
        lines.append(
            f"  last verdict: {verdict['action']} ({verdict['reason']}): {verdict['detail']}"
        )
    return "\n".join(lines)
