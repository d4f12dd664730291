"""A Kafka front door for tests: TLS termination plus a SASL/SCRAM server, then bytes.

Tansu speaks plaintext without SASL here, so this proxy plays the broker's security
layer: it terminates TLS with the test's certificate, answers ``SaslHandshake`` and
``SaslAuthenticate`` itself (SCRAM-SHA-256/512 via ``scramp``), forwards the
pre-authentication ``ApiVersions`` request to Tansu (adding the two SASL APIs to the
answer), and after a successful exchange pipes bytes both ways. Any other request
before authentication closes the connection. Start Tansu with
``--advertised-listener-url`` set to this proxy, or clients would reconnect around it.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from typing import Any

from scramp import ScramMechanism

API_SASL_HANDSHAKE = 17
API_API_VERSIONS = 18
API_SASL_AUTHENTICATE = 36
ERR_UNSUPPORTED_SASL_MECHANISM = 33
ERR_SASL_AUTHENTICATION_FAILED = 58
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _string(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _with_sasl_apis(body: bytes, version: int) -> bytes:
    """ApiVersions v0-v2 response body with SaslHandshake/SaslAuthenticate 0..1 added."""
    error, count = struct.unpack_from(">hi", body, 0)
    entries = [struct.unpack_from(">hhh", body, 6 + 6 * i) for i in range(count)]
    rest = body[6 + 6 * count :]
    keys = {k for k, _, _ in entries}
    for key in (API_SASL_HANDSHAKE, API_SASL_AUTHENTICATE):
        if key not in keys:
            entries.append((key, 0, 1))
    out = struct.pack(">hi", error, len(entries))
    out += b"".join(struct.pack(">hhh", *e) for e in entries)
    return out + rest


class ScramTlsProxy:
    """TLS + SASL/SCRAM in front of a plaintext Kafka broker on ``target_port``."""

    def __init__(
        self, target_port: int, port: int, certfile: str, keyfile: str, users: dict[str, str]
    ) -> None:
        self.target_port = target_port
        self.port = port
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(certfile, keyfile)
        self.auth: dict[str, dict[str, Any]] = {}
        for mech in MECHANISMS:
            sm = ScramMechanism(mech)
            self.auth[mech] = {
                "mechanism": sm,
                "users": {u: sm.make_auth_info(p, iteration_count=4096) for u, p in users.items()},
            }
        self.failures = 0
        self.successes = 0
        self._server: Any = None

    async def start(self) -> ScramTlsProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.ctx)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            if await self._authenticate(reader, writer, upstream):
                await self._pipe(reader, writer, *upstream)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()
            if upstream is not None:
                upstream[1].close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> bool:
        mechanism: str | None = None
        server: Any = None
        while True:
            req = await _read_frame(reader)
            api_key, version, corr = struct.unpack_from(">hhi", req, 0)
            head = struct.pack(">i", corr)
            if api_key == API_API_VERSIONS:
                upstream[1].write(_frame(req))
                await upstream[1].drain()
                resp = await _read_frame(upstream[0])
                body = resp[4:]
                if version <= 2:
                    body = _with_sasl_apis(body, version)
                writer.write(_frame(resp[:4] + body))
            elif api_key == API_SASL_HANDSHAKE:
                (client_id_len,) = struct.unpack_from(">h", req, 8)
                pos = 10 + max(client_id_len, 0)
                (n,) = struct.unpack_from(">h", req, pos)
                mechanism = req[pos + 2 : pos + 2 + n].decode()
                err = 0 if mechanism in self.auth else ERR_UNSUPPORTED_SASL_MECHANISM
                body = struct.pack(">hi", err, len(MECHANISMS))
                body += b"".join(_string(x) for x in MECHANISMS)
                writer.write(_frame(head + body))
                if err:
                    await writer.drain()
                    return False
            elif api_key == API_SASL_AUTHENTICATE and mechanism is not None:
                (client_id_len,) = struct.unpack_from(">h", req, 8)
                pos = 10 + max(client_id_len, 0)
                (n,) = struct.unpack_from(">i", req, pos)
                token = req[pos + 4 : pos + 4 + n].decode()
                conf = self.auth[mechanism]
                try:
                    if server is None:
                        users = conf["users"]
                        server = conf["mechanism"].make_server(users.__getitem__)
                        server.set_client_first(token)
                        reply, done = server.get_server_first(), False
                    else:
                        server.set_client_final(token)
                        reply, done = server.get_server_final(), True
                except Exception:
                    self.failures += 1
                    body = struct.pack(">h", ERR_SASL_AUTHENTICATION_FAILED)
                    body += _string("Authentication failed") + struct.pack(">i", 0)
                    if version >= 1:
                        body += struct.pack(">q", 0)
                    writer.write(_frame(head + body))
                    await writer.drain()
                    return False
                raw = reply.encode()
                body = struct.pack(">h", 0) + _string(None) + struct.pack(">i", len(raw)) + raw
                if version >= 1:
                    body += struct.pack(">q", 0)
                writer.write(_frame(head + body))
                if done:
                    await writer.drain()
                    self.successes += 1
                    return True
            else:
                return False  # nothing but the handshake before authentication
            await writer.drain()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
