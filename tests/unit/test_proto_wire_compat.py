"""Wire compatibility of mlserve.proto with tritonclient's Triton protos.

Each side is described in its own subprocess, which prints a JSON summary of
every message, enum and service; the test compares the summaries. Our Python
modules use the protobuf package ``mlserve.inference`` (so they can share a
process with tritonclient); the summary maps it back to ``inference``.
Everything tritonclient defines must exist in ours with the same field number,
type, label, referenced type, oneof and JSON name. Additions on our side are
allowed (printed, not failed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"

# Runs in a subprocess: imports the two descriptor modules named by the first
# argument and prints {"files", "messages", "enums", "services"} as JSON.
_DUMP = r"""
import importlib, json, os, sys, tempfile

side, repo = sys.argv[1], sys.argv[2]
proto_dir = os.path.realpath(os.path.join(repo, "proto"))

if side == "triton":
    names = ["tritonclient.grpc.model_config_pb2", "tritonclient.grpc.service_pb2"]
    try:
        import tritonclient.grpc
    except ImportError as exc:
        print(f"tritonclient.grpc is not importable: {exc}", file=sys.stderr)
        sys.exit(77)
else:
    names = ["mlserve.proto.model_config_pb2", "mlserve.proto.grpc_service_pb2"]
    try:
        import mlserve.proto
        found = os.path.realpath(os.path.dirname(mlserve.proto.__file__))
    except ImportError:
        found = None
    if found != proto_dir:
        # Not importable (or an installed copy, not this checkout): expose the
        # checkout's proto/ as mlserve.proto through a throwaway package.
        for mod in [m for m in sys.modules if m == "mlserve" or m.startswith("mlserve.")]:
            del sys.modules[mod]
        shim = tempfile.mkdtemp(prefix="mlserve-proto-shim-")
        os.mkdir(os.path.join(shim, "mlserve"))
        open(os.path.join(shim, "mlserve", "__init__.py"), "w").close()
        os.symlink(proto_dir, os.path.join(shim, "mlserve", "proto"))
        sys.path.insert(0, shim)
        importlib.invalidate_caches()

from google.protobuf import descriptor_pb2 as D

FDP = D.FieldDescriptorProto
out = {"files": {}, "messages": {}, "enums": {}, "services": {}}

def enum(prefix, e):
    out["enums"][prefix + e.name] = {v.name: v.number for v in e.value}

def message(prefix, m, live):
    full = prefix + m.name
    fields = {}
    for f in m.field:
        oneof = m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None
        fields[f.name] = [
            f.number,
            FDP.Type.Name(f.type),
            FDP.Label.Name(f.label),
            f.type_name.lstrip("."),
            oneof,
            live.fields_by_name[f.name].json_name,
        ]
    out["messages"][full] = {"fields": fields, "map_entry": m.options.map_entry}
    for e in m.enum_type:
        enum(full + ".", e)
    for n in m.nested_type:
        message(full + ".", n, live.nested_types_by_name[n.name])

for name in names:
    fd = importlib.import_module(name).DESCRIPTOR
    proto = D.FileDescriptorProto()
    fd.CopyToProto(proto)
    prefix = proto.package + "." if proto.package else ""
    out["files"][proto.name] = {
        "module": name,
        "package": proto.package,
        "syntax": proto.syntax,
        "dependencies": list(proto.dependency),
    }
    for e in proto.enum_type:
        enum(prefix, e)
    for m in proto.message_type:
        message(prefix, m, fd.message_types_by_name[m.name])
    for s in proto.service:
        out["services"][prefix + s.name] = {
            r.name: [
                r.input_type.lstrip("."),
                r.output_type.lstrip("."),
                r.client_streaming,
                r.server_streaming,
            ]
            for r in s.method
        }

text = json.dumps(out, sort_keys=True)
if side != "triton":
    # Our Python modules live in package mlserve.inference (see gen_proto.sh);
    # on the wire only field numbers and the inference.* service path count.
    text = text.replace('"mlserve.inference.', '"inference.').replace(
        '"mlserve.inference"', '"inference"')
print(text)
"""


def _describe(side: str, cwd: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _DUMP, side, str(REPO)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode == 77:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, f"describing {side} protos failed:\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def descriptions(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], ...]:
    # Only look tritonclient up: importing its protos here would put inference.*
    # into this process's descriptor pool and break later imports of ours.
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    cwd = tmp_path_factory.mktemp("proto-describe")
    return _describe("triton", cwd), _describe("ours", cwd)


def test_files_register_under_distinct_paths(descriptions: tuple[dict[str, Any], ...]) -> None:
    triton, ours = descriptions
    assert sorted(ours["files"]) == [
        "mlserve/proto/grpc_service.proto",
        "mlserve/proto/model_config.proto",
    ]
    assert not set(ours["files"]) & set(triton["files"])
    for info in ours["files"].values():
        assert info["package"] == "inference"
        assert info["syntax"] == "proto3"
    assert ours["files"]["mlserve/proto/grpc_service.proto"]["dependencies"] == [
        "mlserve/proto/model_config.proto"
    ]


def test_wire_compatible_with_tritonclient(descriptions: tuple[dict[str, Any], ...]) -> None:
    triton, ours = descriptions
    problems: list[str] = []
    extras: list[str] = []

    for name, msg in sorted(triton["messages"].items()):
        mine = ours["messages"].get(name)
        if mine is None:
            problems.append(f"missing message {name}")
            continue
        if mine["map_entry"] != msg["map_entry"]:
            problems.append(f"{name}: map_entry {mine['map_entry']} != {msg['map_entry']}")
        for field, spec in sorted(msg["fields"].items()):
            got = mine["fields"].get(field)
            if got is None:
                problems.append(f"missing field {name}.{field} {spec}")
            elif got != spec:
                problems.append(f"{name}.{field}: ours {got} != tritonclient {spec}")
        extras += [f"field {name}.{f}" for f in sorted(set(mine["fields"]) - set(msg["fields"]))]
    extras += [f"message {n}" for n in sorted(set(ours["messages"]) - set(triton["messages"]))]

    for name, values in sorted(triton["enums"].items()):
        mine = ours["enums"].get(name)
        if mine is None:
            problems.append(f"missing enum {name}")
            continue
        for value, number in sorted(values.items()):
            if mine.get(value) != number:
                problems.append(f"{name}.{value}: ours {mine.get(value)} != tritonclient {number}")
        extras += [f"enum value {name}.{v}" for v in sorted(set(mine) - set(values))]
    extras += [f"enum {n}" for n in sorted(set(ours["enums"]) - set(triton["enums"]))]

    for name, rpcs in sorted(triton["services"].items()):
        mine = ours["services"].get(name)
        if mine is None:
            problems.append(f"missing service {name}")
            continue
        for rpc, spec in sorted(rpcs.items()):
            if mine.get(rpc) != spec:
                problems.append(f"{name}/{rpc}: ours {mine.get(rpc)} != tritonclient {spec}")
        extras += [f"rpc {name}/{r}" for r in sorted(set(mine) - set(rpcs))]
    extras += [f"service {n}" for n in sorted(set(ours["services"]) - set(triton["services"]))]

    print(
        f"tritonclient: {len(triton['messages'])} messages, {len(triton['enums'])} enums, "
        f"{sum(len(r) for r in triton['services'].values())} rpcs; "
        f"ours: {len(ours['messages'])} messages, {len(ours['enums'])} enums, "
        f"{sum(len(r) for r in ours['services'].values())} rpcs"
    )
    for extra in extras:
        print(f"extra in mlserve.proto: {extra}")
    assert not problems, "incompatible with tritonclient:\n" + "\n".join(problems)
    # Sanity check that the comparison saw the whole API.
    assert len(triton["services"]["inference.GRPCInferenceService"]) >= 20
    assert "inference.ModelConfig" in triton["messages"]


def test_generated_modules_are_current() -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed")
    proc = subprocess.run(
        [str(REPO / "scripts" / "gen_proto.sh"), "--check"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (
        "scripts/gen_proto.sh --check failed (rerun scripts/gen_proto.sh):\n"
        + proc.stdout[-4000:]
        + proc.stderr[-2000:]
    )
