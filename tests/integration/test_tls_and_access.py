"""TLS (one-way and mutual) on both transports, and restricted protocol groups.

Every test talks to a real `mlserve serve` process through real clients:
tritonclient.grpc / tritonclient.http, and the standard library's `ssl` +
`http.client` where a test needs the raw status, headers or body, or a
handshake that tritonclient cannot express. Certificates come from a private
CA generated once per module with `cryptography`; a second, untrusted CA
issues the certificates that must be refused."""

from __future__ import annotations

import datetime
import functools
import http.client
import ipaddress
import json
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent.ssl
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess, start_server

# A failing gRPC call must fail fast, not wait out pytest's timeout.
RPC_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0
ADMIN_HEADER = "admin-key"
ADMIN_SECRET = "secret"


# -- certificates -------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # a CA the server does not trust (nor the clients)
    rogue_client_cert: Path  # a client certificate that CA issued
    rogue_client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mlserve tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(
    common_name: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = _make_ca("mlserve test CA")
    server_cert, server_key = _make_leaf("localhost", ca_cert, ca_key, server=True)
    client_cert, client_key = _make_leaf("test client", ca_cert, ca_key, server=False)
    rogue_cert, rogue_key = _make_ca("rogue CA")
    rogue_client_cert, rogue_client_key = _make_leaf(
        "rogue client", rogue_cert, rogue_key, server=False
    )
    return Pki(
        ca=_write_cert(root / "ca.pem", ca_cert),
        server_cert=_write_cert(root / "server.pem", server_cert),
        server_key=_write_key(root / "server.key", server_key),
        client_cert=_write_cert(root / "client.pem", client_cert),
        client_key=_write_key(root / "client.key", client_key),
        rogue_ca=_write_cert(root / "rogue-ca.pem", rogue_cert),
        rogue_client_cert=_write_cert(root / "rogue-client.pem", rogue_client_cert),
        rogue_client_key=_write_key(root / "rogue-client.key", rogue_client_key),
    )


def test_generated_server_certificate_names_loopback(pki: Pki) -> None:
    """The fixture itself: the server certificate chains to the CA and names 127.0.0.1."""
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.IPv4Address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)


# -- servers ------------------------------------------------------------------


def _serve(repository: Path, *flags: str) -> Iterator[ServerProcess]:
    server = start_server(repository, *flags)
    try:
        assert server.ready, server.output()
        yield server
    finally:
        server.terminate()


@pytest.fixture(scope="module")
def grpc_tls_server(model_repository: Path, pki: Pki) -> Iterator[ServerProcess]:
    """gRPC over TLS (no client certificates); HTTP stays plaintext."""
    yield from _serve(
        model_repository,
        "--grpc-use-ssl",
        "--grpc-server-cert",
        str(pki.server_cert),
        "--grpc-server-key",
        str(pki.server_key),
    )


@pytest.fixture(scope="module")
def grpc_mtls_server(model_repository: Path, pki: Pki) -> Iterator[ServerProcess]:
    yield from _serve(
        model_repository,
        "--grpc-use-ssl",
        "--grpc-use-ssl-mutual",
        "--grpc-server-cert",
        str(pki.server_cert),
        "--grpc-server-key",
        str(pki.server_key),
        "--grpc-root-cert",
        str(pki.ca),
    )


@pytest.fixture(scope="module")
def http_tls_server(model_repository: Path, pki: Pki) -> Iterator[ServerProcess]:
    """HTTP over TLS (no client certificates); gRPC stays plaintext."""
    yield from _serve(
        model_repository,
        "--http-use-ssl",
        "--http-server-cert",
        str(pki.server_cert),
        "--http-server-key",
        str(pki.server_key),
    )


@pytest.fixture(scope="module")
def http_mtls_server(model_repository: Path, pki: Pki) -> Iterator[ServerProcess]:
    yield from _serve(
        model_repository,
        "--http-use-ssl",
        "--http-use-ssl-mutual",
        "--http-server-cert",
        str(pki.server_cert),
        "--http-server-key",
        str(pki.server_key),
        "--http-root-cert",
        str(pki.ca),
    )


@pytest.fixture(scope="module")
def restricted_server(model_repository: Path) -> Iterator[ServerProcess]:
    spec = f"model-repository:{ADMIN_HEADER}={ADMIN_SECRET}"
    yield from _serve(
        model_repository, "--grpc-restricted-protocol", spec, "--http-restricted-api", spec
    )


# -- client helpers -----------------------------------------------------------


def _mlp_input() -> np.ndarray:
    return np.random.default_rng(1234).standard_normal((3, 64)).astype(np.float32)


def _grpc_infer(
    client: grpcclient.InferenceServerClient, x: np.ndarray, headers: dict[str, str] | None = None
) -> np.ndarray:
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(
        "mlp",
        [tensor],
        outputs=[grpcclient.InferRequestedOutput("y")],
        headers=headers,
        client_timeout=RPC_TIMEOUT_S,
    )
    out = result.as_numpy("y")
    assert out is not None
    return out


def _http_infer(
    client: httpclient.InferenceServerClient, x: np.ndarray, headers: dict[str, str] | None = None
) -> np.ndarray:
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result = client.infer(
        "mlp",
        [tensor],
        outputs=[httpclient.InferRequestedOutput("y", binary_data=True)],
        headers=headers,
    )
    out = result.as_numpy("y")
    assert out is not None
    return out


def _grpc_client(url: str, **kwargs: Any) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url, **kwargs)


def _grpc_error(call: Callable[[], object]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def _gevent_context(
    cafile: Path, cert: Path | None = None, key: Path | None = None
) -> gevent.ssl.SSLContext:
    context = gevent.ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def _https_client(
    url: str, cafile: Path, cert: Path | None = None, key: Path | None = None
) -> httpclient.InferenceServerClient:
    """tritonclient.http over TLS, verifying the server against `cafile` (and its
    name, 127.0.0.1, against the certificate's IP SAN)."""
    factory = functools.partial(_gevent_context, cafile, cert, key)
    return httpclient.InferenceServerClient(
        url,
        ssl=True,
        ssl_options={},
        ssl_context_factory=factory,
        connection_timeout=HTTP_TIMEOUT_S,
        network_timeout=HTTP_TIMEOUT_S,
    )


def _client_context(
    cafile: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _request(
    address: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> RawResponse:
    """One request on a fresh connection (HTTPS when `context` is given)."""
    host, _, port = address.rpartition(":")
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection(host, int(port), timeout=HTTP_TIMEOUT_S)
    else:
        connection = http.client.HTTPSConnection(
            host, int(port), timeout=HTTP_TIMEOUT_S, context=context
        )
    try:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return RawResponse(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        connection.close()


def _request_fails(address: str, method: str, path: str, **kwargs: Any) -> BaseException:
    """The request must be refused at the connection level: a TLS alert, a reset, or
    a reply that is not HTTP. A timeout is not a refusal, so it does not count."""
    try:
        response = _request(address, method, path, **kwargs)
    except TimeoutError as exc:
        pytest.fail(f"server hung instead of refusing the connection: {exc!r}")
    except (ssl.SSLError, ConnectionError, http.client.HTTPException) as exc:
        return exc
    pytest.fail(f"request unexpectedly answered: {response.status} {response.body[:200]!r}")


def _infer_body(x: np.ndarray) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "data": x.ravel().tolist(),
                }
            ]
        }
    ).encode()


def _json_output(response: RawResponse, name: str) -> np.ndarray:
    assert response.status == 200, response.body
    for output in response.json()["outputs"]:
        if output["name"] == name:
            return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    raise AssertionError(f"no output {name!r} in {response.body[:300]!r}")


# -- gRPC over TLS ------------------------------------------------------------


def test_grpc_tls_client_trusting_ca_is_served(grpc_tls_server: ServerProcess, pki: Pki) -> None:
    x = _mlp_input()
    with _grpc_client(grpc_tls_server.grpc, ssl=True, root_certificates=str(pki.ca)) as client:
        assert client.is_server_live(client_timeout=RPC_TIMEOUT_S)
        assert client.is_server_ready(client_timeout=RPC_TIMEOUT_S)
        assert client.is_model_ready("mlp", client_timeout=RPC_TIMEOUT_S)
        y_tls = _grpc_infer(client, x)
    with httpclient.InferenceServerClient(grpc_tls_server.http) as plain:
        y_plain = _http_infer(plain, x)
    assert y_tls.shape == (3, 10)
    assert y_tls.dtype == np.float32
    np.testing.assert_allclose(y_tls, y_plain, rtol=1e-6, atol=1e-6)


def test_grpc_tls_refuses_plaintext_client(grpc_tls_server: ServerProcess) -> None:
    with _grpc_client(grpc_tls_server.grpc) as client:
        error = _grpc_error(lambda: client.is_server_ready(client_timeout=RPC_TIMEOUT_S))
    assert error.status() == "StatusCode.UNAVAILABLE", error


def test_grpc_tls_client_rejects_server_from_untrusted_ca(
    grpc_tls_server: ServerProcess, pki: Pki
) -> None:
    """The server really presents our CA's certificate: a client trusting another CA
    refuses it."""
    with _grpc_client(
        grpc_tls_server.grpc, ssl=True, root_certificates=str(pki.rogue_ca)
    ) as client:
        error = _grpc_error(lambda: client.is_server_ready(client_timeout=RPC_TIMEOUT_S))
    assert error.status() == "StatusCode.UNAVAILABLE", error


# -- gRPC mutual TLS ----------------------------------------------------------


def test_grpc_mtls_client_with_certificate_is_served(
    grpc_mtls_server: ServerProcess, pki: Pki
) -> None:
    x = _mlp_input()
    with _grpc_client(
        grpc_mtls_server.grpc,
        ssl=True,
        root_certificates=str(pki.ca),
        private_key=str(pki.client_key),
        certificate_chain=str(pki.client_cert),
    ) as client:
        assert client.is_server_ready(client_timeout=RPC_TIMEOUT_S)
        y_tls = _grpc_infer(client, x)
    with httpclient.InferenceServerClient(grpc_mtls_server.http) as plain:
        y_plain = _http_infer(plain, x)
    assert y_tls.shape == (3, 10)
    np.testing.assert_allclose(y_tls, y_plain, rtol=1e-6, atol=1e-6)


def test_grpc_mtls_refuses_client_without_certificate(
    grpc_mtls_server: ServerProcess, pki: Pki
) -> None:
    with _grpc_client(grpc_mtls_server.grpc, ssl=True, root_certificates=str(pki.ca)) as client:
        error = _grpc_error(lambda: client.is_server_ready(client_timeout=RPC_TIMEOUT_S))
    assert error.status() == "StatusCode.UNAVAILABLE", error


def test_grpc_mtls_refuses_certificate_from_untrusted_ca(
    grpc_mtls_server: ServerProcess, pki: Pki
) -> None:
    with _grpc_client(
        grpc_mtls_server.grpc,
        ssl=True,
        root_certificates=str(pki.ca),
        private_key=str(pki.rogue_client_key),
        certificate_chain=str(pki.rogue_client_cert),
    ) as client:
        error = _grpc_error(lambda: client.is_server_ready(client_timeout=RPC_TIMEOUT_S))
    assert error.status() == "StatusCode.UNAVAILABLE", error


# -- HTTP over TLS ------------------------------------------------------------


def test_https_health_and_infer_with_stdlib_client(
    http_tls_server: ServerProcess, pki: Pki
) -> None:
    context = _client_context(pki.ca)
    ready = _request(http_tls_server.http, "GET", "/v2/health/ready", context=context)
    assert ready.status == 200, ready.body
    x = _mlp_input()
    response = _request(
        http_tls_server.http, "POST", "/v2/models/mlp/infer", body=_infer_body(x), context=context
    )
    y_tls = _json_output(response, "y")
    with _grpc_client(http_tls_server.grpc) as plain:
        y_plain = _grpc_infer(plain, x)
    assert y_tls.shape == (3, 10)
    np.testing.assert_allclose(y_tls, y_plain, rtol=1e-6, atol=1e-6)


def test_https_infer_with_tritonclient(http_tls_server: ServerProcess, pki: Pki) -> None:
    x = _mlp_input()
    with _https_client(http_tls_server.http, pki.ca) as client:
        assert client.is_server_ready()
        assert client.is_model_ready("mlp")
        y_tls = _http_infer(client, x)
    with _grpc_client(http_tls_server.grpc) as plain:
        y_plain = _grpc_infer(plain, x)
    assert y_tls.shape == (3, 10)
    assert y_tls.dtype == np.float32
    np.testing.assert_allclose(y_tls, y_plain, rtol=1e-6, atol=1e-6)


def test_https_port_refuses_plaintext_http(http_tls_server: ServerProcess) -> None:
    _request_fails(http_tls_server.http, "GET", "/v2/health/ready")


def test_https_client_rejects_server_from_untrusted_ca(
    http_tls_server: ServerProcess, pki: Pki
) -> None:
    error = _request_fails(
        http_tls_server.http, "GET", "/v2/health/ready", context=_client_context(pki.rogue_ca)
    )
    assert isinstance(error, ssl.SSLCertVerificationError), repr(error)


def test_https_certificate_names_the_server(http_tls_server: ServerProcess, pki: Pki) -> None:
    """The server presents the configured certificate (hostname checked by the context)."""
    host, _, port = http_tls_server.http.rpartition(":")
    context = _client_context(pki.ca)
    connection = http.client.HTTPSConnection(
        host, int(port), timeout=HTTP_TIMEOUT_S, context=context
    )
    try:
        connection.request("GET", "/v2/health/live")
        assert connection.getresponse().status == 200
        assert connection.sock is not None
        peer_der = connection.sock.getpeercert(binary_form=True)
    finally:
        connection.close()
    expected = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    assert peer_der == expected.public_bytes(serialization.Encoding.DER)


# -- HTTP mutual TLS ----------------------------------------------------------


def test_https_mtls_client_with_certificate_is_served(
    http_mtls_server: ServerProcess, pki: Pki
) -> None:
    context = _client_context(pki.ca, pki.client_cert, pki.client_key)
    ready = _request(http_mtls_server.http, "GET", "/v2/health/ready", context=context)
    assert ready.status == 200, ready.body
    x = _mlp_input()
    with _https_client(http_mtls_server.http, pki.ca, pki.client_cert, pki.client_key) as client:
        assert client.is_server_ready()
        y_tls = _http_infer(client, x)
    with _grpc_client(http_mtls_server.grpc) as plain:
        y_plain = _grpc_infer(plain, x)
    assert y_tls.shape == (3, 10)
    np.testing.assert_allclose(y_tls, y_plain, rtol=1e-6, atol=1e-6)


def test_https_mtls_refuses_client_without_certificate(
    http_mtls_server: ServerProcess, pki: Pki
) -> None:
    _request_fails(
        http_mtls_server.http, "GET", "/v2/health/ready", context=_client_context(pki.ca)
    )


def test_https_mtls_refuses_certificate_from_untrusted_ca(
    http_mtls_server: ServerProcess, pki: Pki
) -> None:
    _request_fails(
        http_mtls_server.http,
        "GET",
        "/v2/health/ready",
        context=_client_context(pki.ca, pki.rogue_client_cert, pki.rogue_client_key),
    )


def test_https_mtls_server_keeps_serving_after_refusals(
    http_mtls_server: ServerProcess, pki: Pki
) -> None:
    """Refused handshakes must not take the listener (or the process) down."""
    for _ in range(3):
        _request_fails(
            http_mtls_server.http, "GET", "/v2/health/ready", context=_client_context(pki.ca)
        )
    context = _client_context(pki.ca, pki.client_cert, pki.client_key)
    assert _request(http_mtls_server.http, "GET", "/v2/health/ready", context=context).status == 200
    assert http_mtls_server.process.poll() is None


# -- restricted protocol groups -------------------------------------------------


def _model_names(index: Any) -> set[str]:
    return {model.name for model in index.models}


def test_grpc_repository_index_needs_the_header(restricted_server: ServerProcess) -> None:
    with _grpc_client(restricted_server.grpc) as client:
        error = _grpc_error(lambda: client.get_model_repository_index(client_timeout=RPC_TIMEOUT_S))
        assert error.status() == "StatusCode.PERMISSION_DENIED", error
        assert ADMIN_HEADER in error.message(), error

        error = _grpc_error(
            lambda: client.get_model_repository_index(
                headers={ADMIN_HEADER: "wrong"}, client_timeout=RPC_TIMEOUT_S
            )
        )
        assert error.status() == "StatusCode.PERMISSION_DENIED", error

        index = client.get_model_repository_index(
            headers={ADMIN_HEADER: ADMIN_SECRET}, client_timeout=RPC_TIMEOUT_S
        )
        assert {"mlp", "two_output"} <= _model_names(index)


def test_grpc_unload_without_header_is_denied_and_changes_nothing(
    restricted_server: ServerProcess,
) -> None:
    with _grpc_client(restricted_server.grpc) as client:
        error = _grpc_error(lambda: client.unload_model("mlp", client_timeout=RPC_TIMEOUT_S))
        assert error.status() == "StatusCode.PERMISSION_DENIED", error
        error = _grpc_error(lambda: client.load_model("mlp", client_timeout=RPC_TIMEOUT_S))
        assert error.status() == "StatusCode.PERMISSION_DENIED", error
        assert client.is_model_ready("mlp", client_timeout=RPC_TIMEOUT_S)


def test_grpc_inference_and_health_stay_unrestricted(restricted_server: ServerProcess) -> None:
    x = _mlp_input()
    with _grpc_client(restricted_server.grpc) as client:
        assert client.is_server_ready(client_timeout=RPC_TIMEOUT_S)
        assert client.get_model_metadata("mlp", client_timeout=RPC_TIMEOUT_S).name == "mlp"
        y = _grpc_infer(client, x)
    assert y.shape == (3, 10)


def test_http_repository_index_without_header_is_403_naming_the_header(
    restricted_server: ServerProcess,
) -> None:
    response = _request(restricted_server.http, "POST", "/v2/repository/index", body=b"{}")
    assert response.status == 403, response.body
    assert response.headers.get("content-type", "").startswith("application/json")
    doc = response.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str), doc
    assert ADMIN_HEADER in doc["error"], doc

    wrong = _request(
        restricted_server.http,
        "POST",
        "/v2/repository/index",
        body=b"{}",
        headers={ADMIN_HEADER: "wrong"},
    )
    assert wrong.status == 403, wrong.body


@pytest.mark.parametrize("header_name", [ADMIN_HEADER, "Admin-Key"])
def test_http_repository_index_with_header_succeeds(
    restricted_server: ServerProcess, header_name: str
) -> None:
    """HTTP header names are case-insensitive (RFC 9110 section 5.1)."""
    response = _request(
        restricted_server.http,
        "POST",
        "/v2/repository/index",
        body=b"{}",
        headers={header_name: ADMIN_SECRET},
    )
    assert response.status == 200, response.body
    names = {entry["name"] for entry in response.json()}
    assert {"mlp", "two_output"} <= names


def test_http_repository_via_tritonclient(restricted_server: ServerProcess) -> None:
    with httpclient.InferenceServerClient(restricted_server.http) as client:
        with pytest.raises(InferenceServerException) as info:
            client.get_model_repository_index()
        assert info.value.status() == "403"
        assert ADMIN_HEADER in info.value.message()

        with pytest.raises(InferenceServerException) as info:
            client.unload_model("mlp")
        assert info.value.status() == "403"
        assert client.is_model_ready("mlp")

        index = client.get_model_repository_index(headers={ADMIN_HEADER: ADMIN_SECRET})
        assert {"mlp", "two_output"} <= {entry["name"] for entry in index}


def test_http_inference_and_health_stay_unrestricted(restricted_server: ServerProcess) -> None:
    ready = _request(restricted_server.http, "GET", "/v2/health/ready")
    assert ready.status == 200
    x = _mlp_input()
    y_json = _json_output(
        _request(restricted_server.http, "POST", "/v2/models/mlp/infer", body=_infer_body(x)), "y"
    )
    with httpclient.InferenceServerClient(restricted_server.http) as client:
        y_binary = _http_infer(client, x)
    assert y_json.shape == y_binary.shape == (3, 10)
    np.testing.assert_allclose(y_json, y_binary, rtol=1e-6, atol=1e-6)
