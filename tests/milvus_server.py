"""A real Milvus server for tests: the PyPI package ``milvus`` (standalone 2.3.x with embedded
etcd), with TLS (a self-signed certificate made here) and user authentication turned on, every
port chosen free, stopped with its child process at the end."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT_USER, FIRST_PASSWORD = "root", "Milvus"  # the server's built-in first credentials
ROOT_PASSWORD = "pagemill-ci-Secret-0001"  # set at start, so that a leak of it is recognisable
PORT_FLAGS = ("--etcd-port",  # not used: etcd's own listeners stay on 2379/2380 anyway "--root-coord-port", "--proxy-internal-port", "--query-coord-port", "--query-node-port",
              "--index-coord-port", "--index-node-port", "--data-coord-port", "--data-node-port")
# Milvus reads a setting from the environment too (the key upper-cased, dots as underscores). The
# test server's coordinators poll more often than a production server's, so that the tests wait
# less for what the server does in the background (all measured on 2.3.5, 2 cores):
# - the query coordinator refreshes what its query node serves every 10 s by default: segments a
#   bulk import adds were counted only after two such rounds (22 s for three small imports, 7 s
#   refreshed every second);
# - it checks loads every second (creating and loading an empty collection: 3 s, 2.5 s at 200 ms);
# - the data coordinator seals a segment for a flush once its assignments expire, after 2 s by
#   default (a flush of 100 rows: 2.5-3.5 s, 1 s at 200 ms).
# Nothing else changes: the same requests, the same answers.
SERVER_ENV = {"QUERYCOORD_UPDATENEXTTARGETINTERVAL": "1", "QUERYCOORD_CHECKINTERVAL": "200",
              "QUERYCOORD_DISTPULLINTERVAL": "100", "DATACOORD_SEGMENT_ASSIGNMENTEXPIRATION": "200"}


@dataclass
class MilvusServer:
    uri: str
    ca_file: str
    proc: subprocess.Popen
    version: str = ""
    storage: str = ""  # the server's localStorage.path: its binlogs and index files

    def client(self, password: str = ROOT_PASSWORD, **kw):
        from pymilvus import MilvusClient

        return MilvusClient(uri=self.uri, user=ROOT_USER, password=password, secure=True,
                            server_pem_path=self.ca_file, server_name="localhost", timeout=30, **kw)

    def wait_for_indexes(self, prefix: str, timeout_s: float = 120.0, **client_kw) -> None:
        """Until the server has indexed every row of the collections named ``prefix_*`` (it builds
        after the flush, in the background); TimeoutError past ``timeout_s``."""
        client = self.client(**client_kw)
        try:
            deadline = time.monotonic() + timeout_s
            for name in (c for c in client.list_collections() if c.startswith(prefix + "_")):
                for field in client.list_indexes(name):
                    while True:
                        d = client.describe_index(name, field)
                        # (2.3.5 can leave pending_index_rows at the total once the build has finished)
                        if int(d.get("indexed_rows", 0)) >= int(d.get("total_rows", 0)) and (
                                not d.get("pending_index_rows") or d.get("state") == "Finished"):
                            break
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{name}.{field} not indexed in {timeout_s} s: {d}")
                        time.sleep(0.5)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the wrapper and its milvus child (which runs in a session of its own)."""
        import psutil

        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        # a test server's data is thrown away: a few seconds to stop cleanly, then killed (its
        # graceful stop takes over 20 s, paid by every test session)
        _, alive = psutil.wait_procs(family, timeout=3)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def self_signed_cert(dest: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = dest / "server.pem", dest / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def start_milvus_server(data_dir: Path, free_port, timeout_s: float = 120.0) -> MilvusServer:
    exe = Path(sys.executable).with_name("milvus-server")
    if not exe.exists():
        raise RuntimeError(f"{exe} is missing: pip install milvus (the test extra installs it)")
    for port in (2379, 2380):  # the embedded etcd listens on its defaults, whatever the flags say
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                raise RuntimeError(f"127.0.0.1:{port} is taken: another Milvus standalone (embedded etcd) runs here")
    cert, key = self_signed_cert(data_dir)
    proxy = free_port()
    cmd = [str(exe), "--data", str(data_dir / "milvus"), "--proxy-port", str(proxy), "--tls-mode", "1",
           "--server-pem-path", str(cert), "--server-key-path", str(key), "--ca-pem-path", str(cert),
           "--authorization-enabled", "true"]
    for flag in PORT_FLAGS[1:]:
        cmd += [flag, str(free_port())]
    log = open(data_dir / "milvus-server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, **SERVER_ENV))
    server = MilvusServer(f"https://127.0.0.1:{proxy}", str(cert), proc, storage=str(data_dir / "milvus" / "data"))
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"milvus-server exited with {proc.returncode}: see {data_dir / 'milvus-server.log'}")
        try:
            client = server.client(FIRST_PASSWORD)
            server.version = client.get_server_version()
            client.update_password(ROOT_USER, FIRST_PASSWORD, ROOT_PASSWORD)
            client.close()
            return server
        except Exception as e:  # not up yet
            last = e
            time.sleep(1.0)
    server.stop()
    raise RuntimeError(f"milvus-server did not answer in {timeout_s:.0f}s: {last}")
