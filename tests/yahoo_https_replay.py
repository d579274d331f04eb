"""Yahoo's recorded chart answers over real HTTPS on loopback, for curl_cffi sessions.

`yahoo_replay.ReplayAdapter` answers a `requests` session in-process; the session the
product uses in production (`tickercast.market.yahoo.default_session()`, curl_cffi
impersonating Chrome) does its I/O in libcurl, so it can only be replayed over a socket.
`https_replay()` starts, on 127.0.0.1, an HTTP proxy that accepts `CONNECT host:443`,
answers the tunnel with TLS itself (a certificate for Yahoo's hosts, signed by a CA made
for the test) and serves each request with a `ReplayAdapter` (same recordings, slicing,
faults and call counting). Point a session at it with

    session.proxies = {"https": server.proxy_url, "http": server.proxy_url}
    session.verify = str(server.ca_file)

and yfinance's real requests (URL, crumb, cookies, Chrome TLS) go through libcurl to
loopback and nowhere else. `server.tunnels` lists the `host:port` of every CONNECT.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from tests.yahoo_replay import CHART_DIR, ReplayAdapter

YAHOO_HOSTS = [
    "query1.finance.yahoo.com",
    "query2.finance.yahoo.com",
    "finance.yahoo.com",
    "fc.yahoo.com",
    "guce.yahoo.com",
    "consent.yahoo.com",
    "login.yahoo.com",
]


@dataclass
class ReplayServer:
    proxy_url: str
    ca_file: Path
    adapter: ReplayAdapter
    tunnels: list[str] = field(default_factory=list)


def write_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for Yahoo's hosts; (ca, cert, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    valid = {
        "not_valid_before": now - dt.timedelta(days=1),
        "not_valid_after": now + dt.timedelta(days=2),
    }

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tickercast test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid["not_valid_before"])
        .not_valid_after(valid["not_valid_after"])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, YAHOO_HOSTS[1])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid["not_valid_before"])
        .not_valid_after(valid["not_valid_after"])
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in YAHOO_HOSTS]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


def _handler(server: ReplayServer, tls: ssl.SSLContext) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        tunnel: str | None = None

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_CONNECT(self) -> None:  # noqa: N802 - http.server's naming
            server.tunnels.append(self.path)
            self.send_response(200, "Connection Established")
            self.end_headers()
            self.wfile.flush()
            self.tunnel = self.path.rsplit(":", 1)[0]
            self.connection = tls.wrap_socket(self.connection, server_side=True)
            self.rfile = self.connection.makefile("rb", self.rbufsize)
            self.wfile = self.connection.makefile("wb", 0)
            self.close_connection = False

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            url = self.path if self.tunnel is None else f"https://{self.tunnel}{self.path}"
            prepared = requests.Request(self.command, url, data=body).prepare()
            response = server.adapter.send(prepared)
            content = response.content or b""
            self.send_response(response.status_code, response.reason or None)
            for name, value in response.headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def do_GET(self) -> None:  # noqa: N802
            try:
                self._answer()
            except requests.ConnectionError:  # an injected fault: drop the connection
                self.close_connection = True

        do_POST = do_GET  # noqa: N815

    return Handler


@contextlib.contextmanager
def https_replay(
    folder: Path, chart_dir: Path = CHART_DIR, fail_first: int = 0, status: int | None = None
) -> Iterator[ReplayServer]:
    """A loopback HTTPS replay of Yahoo (see the module doc); faults as in `replay_session`."""
    ca_file, cert_file, key_file = write_certificates(folder)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    tls.set_alpn_protocols(["http/1.1"])
    adapter = ReplayAdapter(Path(chart_dir), fail_first=fail_first, status=status)
    state = ReplayServer(proxy_url="", ca_file=ca_file, adapter=adapter)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, tls))
    httpd.daemon_threads = True
    state.proxy_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="yahoo-https-replay", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
