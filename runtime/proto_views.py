"""Protobuf views of control-plane objects shared by both transports: a model
version's `inference.ModelConfig`, its `ModelStatistics`, and the proto-JSON
form Triton's HTTP API prints (proto field names, every primitive field,
64-bit integers as JSON numbers)."""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from mlserve.proto import grpc_service_pb2 as pb
from mlserve.proto import model_config_pb2 as mc
from mlserve.runtime import datatypes
from mlserve.runtime.model_config import BACKEND, PLATFORM
from mlserve.runtime.model_version import ModelVersion
from mlserve.runtime.statistics import Duration, ModelStatistics


def model_config_proto(model: ModelVersion) -> mc.ModelConfig:
    config = model.config
    proto = mc.ModelConfig(
        name=config.name,
        platform=PLATFORM,
        backend=BACKEND,
        max_batch_size=model.max_batch_size,
        default_model_filename=config.default_model_filename,
    )
    for spec in config.inputs:
        proto.input.add(
            name=spec.name,
            data_type=mc.DataType.Value(datatypes.BY_NAME[spec.datatype].config_enum),
            dims=list(spec.dims),
        )
    for spec in config.outputs:
        proto.output.add(
            name=spec.name,
            data_type=mc.DataType.Value(datatypes.BY_NAME[spec.datatype].config_enum),
            dims=list(spec.dims),
        )
    policy = config.version_policy
    if policy.kind == "latest":
        proto.version_policy.latest.num_versions = policy.num_versions
    elif policy.kind == "all":
        proto.version_policy.all.SetInParent()
    else:
        proto.version_policy.specific.versions.extend(policy.versions)
    gpu = config.device.startswith("cuda")
    group = proto.instance_group.add(
        name=f"{config.name}_0",
        kind=mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU,
        count=config.instance_count,
    )
    if gpu:
        group.gpus.append(int(config.device.split(":", 1)[1]))
    batching = config.dynamic_batching
    if batching is not None:
        dyn = proto.dynamic_batching
        dyn.preferred_batch_size.extend(batching.preferred_batch_size)
        dyn.max_queue_delay_microseconds = batching.max_queue_delay_us
        dyn.preserve_ordering = batching.preserve_ordering
        dyn.priority_levels = batching.priority_levels
        dyn.default_priority_level = batching.default_priority_level
        dyn.default_queue_policy.max_queue_size = batching.max_queue_size
        dyn.default_queue_policy.default_timeout_microseconds = batching.default_queue_timeout_us
        # A request's own timeout (V2 `timeout`, gRPC deadline) always applies;
        # an expired request is refused (timeout_action REJECT, the default).
        dyn.default_queue_policy.allow_timeout_override = True
    proto.parameters["sha256"].string_value = model.sha256
    proto.parameters["providers"].string_value = ",".join(model.session.providers)
    return proto


def _duration(target: Any, source: Duration) -> None:
    target.count = source.count
    target.ns = source.ns


def model_statistics_proto(name: str, version: str, stats: ModelStatistics) -> pb.ModelStatistics:
    proto = pb.ModelStatistics(
        name=name,
        version=version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
    )
    inference = proto.inference_stats
    for field in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        _duration(getattr(inference, field), getattr(stats, field))
    for size, batch in sorted(stats.batches.items()):
        entry = proto.batch_stats.add(batch_size=size)
        _duration(entry.compute_input, batch.compute_input)
        _duration(entry.compute_infer, batch.compute_infer)
        _duration(entry.compute_output, batch.compute_output)
    return proto


def to_json_dict(message: Message) -> dict[str, Any]:
    """Proto -> JSON-ready dict the way Triton prints it (field names, all
    primitives, int64 as numbers, enums by name)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _scalar(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_scalar(field, v) for v in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if not message.HasField(field.name):  # unset messages are absent, as in Triton
                continue
            out[field.name] = to_json_dict(value)
        else:
            if field.containing_oneof is not None and not message.HasField(field.name):
                continue
            out[field.name] = _scalar(field, value)
    return out


def _scalar(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_json_dict(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    return value
