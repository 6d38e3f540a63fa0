#!/usr/bin/env python3
"""TLS server for the C client tests, in front of the real daemon.

Terminates TLS (1.3 only, client certificate required, session tickets on:
Python's ssl module issues them by default) on 127.0.0.1 and carries each
connection's bytes unchanged to the daemon's Unix socket, so the C test
groups run over tls:// against the same daemon. Writes the port it listens
on to PORT_FILE (written then renamed: present means listening).

    tls_relay.py PORT_FILE UPSTREAM_PATH CA CERT KEY
    tls_relay.py --plain PORT_FILE UPSTREAM_PATH    (TCP without TLS: the
        same relay, for the benchmark's TLS/TCP ratio)
"""
import asyncio
import os
import socket
import ssl
import sys


async def pump(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main():
    ctx = None
    if sys.argv[1] == "--plain":
        port_file, upstream = sys.argv[2:4]
    else:
        port_file, upstream, ca, cert, key = sys.argv[1:6]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(ca)
        ctx.load_cert_chain(cert, key)

    async def handle(reader, writer):
        try:
            ureader, uwriter = await asyncio.open_unix_connection(upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pump(reader, uwriter), pump(ureader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    for sock in server.sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = server.sockets[0].getsockname()[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(port_file + ".tmp", port_file)
    async with server:
        await server.serve_forever()


asyncio.run(main())
