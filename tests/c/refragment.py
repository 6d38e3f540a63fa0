#!/usr/bin/env python3
"""Relay for the C client tests, in front of the real daemon.

Listens on a Unix socket and connects each client to the daemon's socket.
Requests pass unchanged; each reply record (RFC 5531 record marking) is
re-sent as several fragments, each written on its own, so the client reads
multi-fragment replies that arrive in pieces. Neither daemon under test
fragments its replies, so this is the only way to reach that code.

    refragment.py LISTEN_PATH UPSTREAM_PATH
"""
import asyncio
import struct
import sys

LAST = 0x80000000


def cut(payload):
    """Fragments of one record: 1 byte, 3 bytes, then halves of the rest."""
    out, rest = [], payload
    for size in (1, 3):
        if len(rest) > size:
            out.append(rest[:size])
            rest = rest[size:]
    if len(rest) > 1:
        half = len(rest) // 2
        out.append(rest[:half])
        rest = rest[half:]
    out.append(rest)
    return out


async def replies(upstream, client):
    try:
        while True:
            body = b""
            while True:
                (mark,) = struct.unpack(">I", await upstream.readexactly(4))
                body += await upstream.readexactly(mark & ~LAST)
                if mark & LAST:
                    break
            frags = cut(body)
            for i, frag in enumerate(frags):
                last = LAST if i == len(frags) - 1 else 0
                client.write(struct.pack(">I", last | len(frag)) + frag)
                await client.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        client.close()


async def requests(client, upstream):
    try:
        while True:
            data = await client.read(65536)
            if not data:
                break
            upstream.write(data)
            await upstream.drain()
    except ConnectionError:
        pass
    finally:
        upstream.close()


async def main(listen, target):
    async def serve(c_reader, c_writer):
        try:
            u_reader, u_writer = await asyncio.open_unix_connection(target)
        except OSError:
            c_writer.close()
            return
        await asyncio.gather(replies(u_reader, c_writer),
                             requests(c_reader, u_writer))

    server = await asyncio.start_unix_server(serve, path=listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
