#!/usr/bin/env python3
"""A TCP forwarder 127.0.0.1:LISTEN -> 127.0.0.1:TARGET for tests/s3/s3_storage_test.cc: killing it
makes the S3 server unreachable (connection refused / reset) while the server keeps its
objects; starting it again on the same port brings the server back.

Usage: tcp_proxy.py LISTEN_PORT TARGET_PORT READY_FILE
Writes READY_FILE once listening; stops on SIGTERM/SIGKILL or when its parent goes away.
"""
import asyncio
import os
import sys
import time

listen_port, target_port, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
parent = os.getppid()
deadline = time.time() + 600


async def pipe(reader, writer):
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, reuse_address=True)
    tmp = ready + ".tmp"
    open(tmp, "w").write("ready\n")
    os.rename(tmp, ready)
    async with server:
        while os.getppid() == parent and time.time() < deadline:
            await asyncio.sleep(0.2)


asyncio.run(main())
