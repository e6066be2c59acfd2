"""`DataPlane.start`: the callback path the native gRPC transport serves
ModelInfer on. Each request is answered exactly once, by the batch that ran
it, with what `infer` (the awaited path) answers; a transport that cannot take
an answer costs only its own request; every outcome is counted."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from mlserve import examples
from mlserve.errors import InternalError, InvalidRequest, ModelNotFound, Overloaded
from mlserve.proto import grpc_service_pb2 as pb
from mlserve.runtime.access import AccessPolicy
from mlserve.runtime.dataplane import DataPlane
from mlserve.runtime.grpc_service import InferenceService
from mlserve.runtime.http_api import HttpApi
from mlserve.runtime.http_server import HttpRequest, HttpResponse
from mlserve.runtime.inference_types import (
    InferInput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)
from mlserve.runtime.metrics import ServerMetrics
from mlserve.runtime.repository import ModelRepository
from mlserve.runtime.repository_layout import RepositoryLayout

CONFIG = (
    "max_batch_size: 16\n"
    "session: {intra_op_threads: 1}\n"
    "dynamic_batching: {max_queue_delay_us: 2000, max_queue_size: 6}\n"
)


class Sink:
    """What the transport passes as the context: records what it is given."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.answers: list[InferResponse] = []
        self.errors: list[BaseException] = []
        self.failed_ids: list[str] = []

    @staticmethod
    def reply(sink: Sink, response: InferResponse) -> None:
        if sink.refuse:
            raise ConnectionError("the stream is gone")
        sink.answers.append(response)

    @staticmethod
    def fail(sink: Sink, exc: BaseException, request: InferRequest) -> None:
        sink.errors.append(exc)
        sink.failed_ids.append(request.id)


def request(index: int, model: str = "mlp") -> InferRequest:
    x = (np.arange(64, dtype=np.float32).reshape(1, 64) + index) / 64
    return InferRequest(model, "", [InferInput("x", "FP32", x.shape, x, {})], [], f"r{index}", {})


# `slow` keeps its instance busy for a while with one large request, so the
# requests after it queue (an idle model sends a lone request at once).
SLOW_CONFIG = (
    "max_batch_size: 512\n"
    "execution: threads\n"
    "session: {intra_op_threads: 1}\n"
    "dynamic_batching: {max_queue_delay_us: 2000, max_queue_size: 6}\n"
)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    examples.write_model(tmp_path, "mlp", examples.mlp_model(), config=CONFIG)
    examples.write_model(tmp_path, "slow", examples.matmul_chain_model(512, 32), config=SLOW_CONFIG)
    return tmp_path


def slow_request(index: int, rows: int = 1) -> InferRequest:
    x = np.full((rows, 512), index / 512, dtype=np.float32)
    return InferRequest("slow", "", [InferInput("x", "FP32", x.shape, x, {})], [], f"s{index}", {})


def occupy(dataplane: DataPlane) -> Sink:
    """Start a 512-row request on `slow`: its instance is busy from here."""
    sink = Sink()
    dataplane.start(slow_request(-1, rows=512), Sink.reply, Sink.fail, sink)
    assert dataplane.model("slow").batcher.queued == 0  # running, not queued
    return sink


async def ready_dataplane(repository: Path) -> DataPlane:
    repo = ModelRepository(RepositoryLayout(repository))
    await repo.load_many(["mlp", "slow"])
    dataplane = DataPlane(repo, ServerMetrics())
    dataplane.started = True
    return dataplane


def start_each(dataplane: DataPlane, sinks: list[Sink]) -> None:
    """Start request(i) for the i-th sink, in order."""
    for index, sink in enumerate(sinks):
        dataplane.start(request(index), Sink.reply, Sink.fail, sink)


async def settle(dataplane: DataPlane) -> None:
    """Until no request is in flight (the batch's wait, then its run). The
    bound is for a hang only."""
    deadline = time.monotonic() + 60
    while dataplane.inflight:
        assert time.monotonic() < deadline, f"{dataplane.inflight} requests never answered"
        await asyncio.sleep(0.002)


def test_each_request_is_answered_once_with_what_infer_answers(repository: Path) -> None:
    async def scenario() -> None:
        dataplane = await ready_dataplane(repository)
        expected = [await dataplane.infer(request(i)) for i in range(5)]
        sinks = [Sink() for _ in range(5)]
        start_each(dataplane, sinks)
        assert all(not sink.answers for sink in sinks)  # queued, not run in start
        await settle(dataplane)
        for sink, reference in zip(sinks, expected, strict=True):
            assert not sink.errors
            (answer,) = sink.answers
            assert answer.id == reference.id
            np.testing.assert_allclose(answer.outputs[0].data, reference.outputs[0].data, rtol=1e-6)
        stats = dataplane.model("mlp").stats
        assert stats.success.count == 10
        assert stats.fail.count == 0
        assert max(stats.batches) > 1  # the five shared a batch

    asyncio.run(scenario())


def test_a_stream_that_cannot_take_its_answer_costs_only_its_request(
    repository: Path,
) -> None:
    async def scenario() -> None:
        dataplane = await ready_dataplane(repository)
        sinks = [Sink(refuse=index == 1) for index in range(4)]
        start_each(dataplane, sinks)
        await settle(dataplane)
        assert [len(s.answers) for s in sinks] == [1, 0, 1, 1]
        (error,) = sinks[1].errors
        assert isinstance(error, InternalError)
        assert "the stream is gone" in error.message
        assert sinks[1].failed_ids == ["r1"]  # the error names its request
        assert all(not s.errors for i, s in enumerate(sinks) if i != 1)
        assert dataplane.inflight == 0

    asyncio.run(scenario())


def test_refusals_before_the_queue_raise_and_are_counted(repository: Path) -> None:
    async def scenario() -> None:
        dataplane = await ready_dataplane(repository)
        with pytest.raises(ModelNotFound):
            dataplane.start(request(0, "nope"), Sink.reply, Sink.fail, Sink())
        busy = occupy(dataplane)
        sinks = [Sink() for _ in range(6)]  # max_queue_size: 6
        for index, sink in enumerate(sinks):
            dataplane.start(slow_request(index), Sink.reply, Sink.fail, sink)
        with pytest.raises(Overloaded, match="queue of this model is full"):
            dataplane.start(slow_request(6), Sink.reply, Sink.fail, Sink())
        assert dataplane.inflight == 7  # the refused one left no trace in flight
        await settle(dataplane)
        assert all(len(s.answers) == 1 for s in [busy, *sinks])
        stats = dataplane.model("slow").stats
        assert (stats.success.count, stats.fail.count) == (7, 1)

    asyncio.run(scenario())


def test_expiry_in_the_queue_reaches_the_failure_callback(repository: Path) -> None:
    async def scenario() -> None:
        dataplane = await ready_dataplane(repository)
        busy = occupy(dataplane)
        sinks = [Sink() for _ in range(3)]
        for index, sink in enumerate(sinks):
            late = slow_request(index)
            late.parameters = {"timeout": 1}  # 1 us: gone before the instance is free
            dataplane.start(late, Sink.reply, Sink.fail, sink)
        await settle(dataplane)
        for sink in sinks:
            assert not sink.answers
            (error,) = sink.errors
            assert error.kind.value == "deadline_exceeded"
        assert len(busy.answers) == 1
        assert dataplane.model("slow").stats.fail.count == 3

    asyncio.run(scenario())


def test_an_awaited_request_withdrawn_frees_its_slot(repository: Path) -> None:
    async def scenario() -> None:
        dataplane = await ready_dataplane(repository)
        busy = occupy(dataplane)
        task = asyncio.ensure_future(dataplane.infer(slow_request(0)))
        await asyncio.sleep(0)  # queued behind the busy instance
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        model = dataplane.model("slow")
        assert model.batcher.queued == 0
        assert dataplane.inflight == 1  # the one running
        await settle(dataplane)
        # Counted: a failure, reason "cancelled" (successes + failures = requests).
        assert model.stats.fail.count == 1 and model.stats.success.count == 1
        assert dataplane.metrics.for_model("slow", "1").failures == {"cancelled": 1}
        assert len(busy.answers) == 1
        assert (await dataplane.infer(slow_request(1))).id == "s1"  # still serving

    asyncio.run(scenario())


def test_requested_outputs_unknown_raise_before_the_queue(repository: Path) -> None:
    async def scenario() -> None:
        dataplane = await ready_dataplane(repository)
        bad = request(0)
        bad.outputs = [RequestedOutput("nope", {})]
        with pytest.raises(InvalidRequest, match="nope"):
            dataplane.start(bad, Sink.reply, Sink.fail, Sink())
        assert dataplane.inflight == 0
        assert dataplane.model("mlp").stats.fail.count == 1

    asyncio.run(scenario())


def test_a_stream_message_that_expires_in_the_queue_is_answered_with_its_id(
    repository: Path,
) -> None:
    """ModelStreamInfer's callback path: the error answer names the request."""

    async def scenario() -> None:
        dataplane = await ready_dataplane(repository)
        service = InferenceService(dataplane, AccessPolicy([]), 1 << 20)
        occupy(dataplane)
        message = pb.ModelInferRequest(model_name="slow", id="late-one")
        message.parameters["timeout"].int64_param = 1  # 1 us: expires while it waits
        message.inputs.add(name="x", datatype="FP32", shape=[1, 512])
        message.raw_input_contents.append(np.zeros((1, 512), np.float32).tobytes())
        answers: list[bytes] = []
        service.start_stream_infer(
            message.SerializeToString(), lambda _, reply: answers.append(reply), None
        )
        await settle(dataplane)
        (reply,) = [pb.ModelStreamInferResponse.FromString(a) for a in answers]
        assert "timeout expired" in reply.error_message
        assert reply.infer_response.id == "late-one"
        assert reply.infer_response.model_name == "slow"

    asyncio.run(scenario())


def test_http_inference_is_started_by_callback_and_the_rest_left_to_handle(
    repository: Path,
) -> None:
    """HttpApi.start_infer takes exactly the inference calls; an error found
    later (here the queue timeout) is still a V2 error answer."""

    def post(path: str, doc: dict[str, object]) -> HttpRequest:
        return HttpRequest("POST", path, "", {}, json.dumps(doc).encode(), True)

    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}

    async def scenario() -> None:
        dataplane = await ready_dataplane(repository)
        api = HttpApi(dataplane, AccessPolicy([]), 1 << 20)
        answers: dict[str, HttpResponse] = {}

        def answer(key: str, response: HttpResponse) -> None:
            assert key not in answers  # once each
            answers[key] = response

        assert not api.start_infer(
            HttpRequest("GET", "/v2/models/mlp", "", {}, b"", True), answer, "meta"
        )
        assert not api.start_infer(post("/v2/models/mlp/versions/x/infer", body), answer, "v")
        assert api.start_infer(post("/v2/models/mlp/infer", body), answer, "ok")
        assert api.start_infer(post("/v2/models/mlp/versions/1/infer", body), answer, "v1")
        late = {**body, "parameters": {"timeout": 1}}
        assert api.start_infer(post("/v2/models/mlp/infer", late), answer, "late")
        assert api.start_infer(post("/v2/models/nope/infer", body), answer, "missing")
        assert answers["missing"].status == 404  # refused before the queue: at once
        await settle(dataplane)
        assert answers["ok"].status == answers["v1"].status == 200
        outputs = json.loads(answers["ok"].body)["outputs"]
        assert outputs[0]["shape"] == [1, 10]
        assert answers["late"].status == 504
        assert "timeout expired" in json.loads(answers["late"].body)["error"]

    asyncio.run(scenario())
