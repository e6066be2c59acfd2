"""The model's metadata as the server describes it (V2 model metadata over
gRPC or HTTP, through mlserve's own client, which raises the one-line errors
the CLI prints: nothing listening, no such model, a refusal), so a benchmark
needs no local copy of the model; and the request path the HTTP load uses."""

from __future__ import annotations

from urllib.parse import quote

from mlserve.bench.settings import BenchSettings
from mlserve.client import GrpcClient, HttpClient, ModelMetadata


def model_path(settings: BenchSettings) -> str:
    """'/v2/models/NAME[/versions/V]' with the name quoted for a URL."""
    path = f"/v2/models/{quote(settings.model, safe='')}"
    return f"{path}/versions/{settings.model_version}" if settings.model_version else path


def fetch_metadata(settings: BenchSettings) -> ModelMetadata:
    """Ask the server for the model's metadata over the protocol under test."""
    client = GrpcClient(settings.url) if settings.protocol == "grpc" else HttpClient(settings.url)
    return client.metadata(settings.model, settings.model_version)
