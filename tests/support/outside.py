"""The outside world, on loopback: HTTP and HTTPS servers that stand in for the hosts a session's
network policy lets it reach. They answer every request with what they received (method, path,
headers, body) as JSON, and remember it, so a test can see what crossed the proxy.

The HTTPS server has a certificate from a CA made here; the egress proxy is told to trust that
CA (CODEINTERP_EGRESS_UPSTREAM_CA), and code in a session is handed its PEM to verify with.
"""

from __future__ import annotations

import datetime
import gzip
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Outside:
    """The servers of one test: their ports, the CA to trust, and what they were sent."""

    https_port: int
    http_port: int
    ca_pem: str
    ca_file: str
    received: list[dict[str, Any]] = field(default_factory=list)
    # path -> bytes the servers answer GET with (a package index, say), instead of the echo
    files: dict[str, bytes] = field(default_factory=dict)

    def hosts(self, *names: str) -> str:
        """CODEINTERP_EGRESS_RESOLVE for these names: all of them are these servers."""
        return ",".join(f"{name}=127.0.0.1" for name in names)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certificates(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate signed by it for `names`: (ca, cert, key) PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("codeinterp test CA"))
        .issuer_name(_name("codeinterp test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _handler(
    received: list[dict[str, Any]], files: dict[str, bytes]
) -> type[http.server.BaseHTTPRequestHandler]:
    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as real servers do: no 40 ms wait on a delayed ACK

        def _answer(self) -> None:
            if self.command == "GET" and self.path in files:
                received.append({"method": "GET", "path": self.path, "headers": {}, "body": ""})
                self.send_response(200)
                self.send_header("Content-Length", str(len(files[self.path])))
                self.send_header("Content-Type", "text/html" if self.path.endswith("/") else
                                 "application/octet-stream")  # fmt: skip
                self.end_headers()
                self.wfile.write(files[self.path])
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            seen = {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": body,
                "tls": isinstance(self.connection, ssl.SSLSocket),
            }
            received.append(seen)
            data = json.dumps(seen).encode()
            self.send_response(200)
            if self.path == "/gzip" and "gzip" in self.headers.get("Accept-Encoding", ""):
                data = gzip.compress(data)  # as a server does when the client accepts it
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _answer

        def setup(self) -> None:
            # The TLS handshake here, in the connection's own thread, as a real server does:
            # in accept() it would hold up every other client while one says nothing.
            self.handshake_failed = False
            if isinstance(self.request, ssl.SSLSocket):
                self.request.settimeout(30)
                try:
                    self.request.do_handshake()
                except OSError:  # cut off, or the client went away: nothing to answer
                    self.handshake_failed = True
                self.request.settimeout(None)
            super().setup()

        def handle(self) -> None:
            if not self.handshake_failed:
                super().handle()

        def log_message(self, *args: Any) -> None:
            pass

    return Echo


@contextmanager
def outside_world(directory: Path, names: list[str]) -> Iterator[Outside]:
    """An HTTPS and an HTTP echo server on 127.0.0.1, the HTTPS one valid for `names`."""
    ca, cert, key = make_certificates(directory, names)
    received: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    handler = _handler(received, files)
    https = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    https.socket = context.wrap_socket(
        https.socket, server_side=True, do_handshake_on_connect=False
    )
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (https, plain)]
    for thread in threads:
        thread.start()
    try:
        yield Outside(
            https.server_address[1],
            plain.server_address[1],
            ca.read_text(),
            str(ca),
            received,
            files,
        )
    finally:
        for server in (https, plain):
            server.shutdown()
            server.server_close()
