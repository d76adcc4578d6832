"""A listening socket that the host makes inside a session's network namespace.

A session's namespace has only `lo` and no route out. To give it a way to the egress proxy
without a veth, a bridge or a route, the host joins the namespace in a thread of its own, binds a
TCP listener on the session's 127.0.0.1, and leaves again: the socket stays in that namespace
(where the session's code connects to it) while the host hands it to the proxy, which accepts
there (egress/proxy.py). The socket keeps the namespace alive: close it when the session ends.
"""

from __future__ import annotations

import os
import socket
import threading

from . import linux


def listen_in_namespace_of(pid: int, port: int, backlog: int = 64) -> socket.socket:
    """A TCP listener on 127.0.0.1:`port` in the network namespace of process `pid`."""
    result: list[socket.socket | BaseException] = []
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def make() -> None:
        # setns changes only this thread's namespace; the thread ends right after, so even a
        # failure to go back cannot leave one of the server's threads in a session's namespace.
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.setns(target, linux.CLONE_NEWNET)
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(("127.0.0.1", port))
                    sock.listen(backlog)
                    sock.setblocking(False)
                except BaseException:
                    sock.close()
                    raise
                result.append(sock)
            finally:
                linux.setns(own, linux.CLONE_NEWNET)
        except BaseException as e:
            result.append(e)
        finally:
            os.close(own)

    try:
        thread = threading.Thread(target=make, name="netns-listen")
        thread.start()
        thread.join()
    finally:
        os.close(target)
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]
