"""Test helpers for TLS: certificates made with the openssl CLI, and a TLS-terminating TCP proxy.

tritonserver 2.51 speaks TLS on gRPC itself (--grpc-use-ssl) but not on HTTP; the proxy puts a
TLS endpoint in front of its plain HTTP port, as a reverse proxy does in a deployment.
"""
from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make the test certificates")
    f = {k: folder / f"{k}.pem" for k in ("ca", "ca_key", "server", "server_key", "client", "client_key")}

    def run(*args):
        subprocess.run([openssl, *args], check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", str(f["ca_key"]), "-out", str(f["ca"]), "-days", "1", "-subj", "/CN=test-ca")
    for who, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                     ("client", "extendedKeyUsage=clientAuth\n")):
        csr, extfile = folder / f"{who}.csr", folder / f"{who}.ext"
        extfile.write_text(ext)
        run("req", *ec, "-keyout", str(f[f"{who}_key"]), "-out", str(csr), "-subj", f"/CN={who}")
        run("x509", "-req", "-in", str(csr), "-CA", str(f["ca"]), "-CAkey", str(f["ca_key"]), "-CAcreateserial",
            "-out", str(f[who]), "-days", "1", "-extfile", str(extfile))
    return f


class TlsProxy:
    """Accepts TLS on 127.0.0.1:<port> and forwards the plain bytes to 127.0.0.1:<target>."""

    def __init__(self, target_port: int, cert: Path, key: Path):
        self.target_port = target_port
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()   # a plain-text or untrusting client: the handshake fails, nothing is forwarded
            return
        up = socket.create_connection(("127.0.0.1", self.target_port))

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.close()
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(up, tls), daemon=True).start()
        pump(tls, up)

    def close(self):
        self._stop = True
        self.sock.close()
