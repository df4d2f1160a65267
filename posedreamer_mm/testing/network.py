"""A free local TCP port for a torchrun / gloo rendezvous in tests (fixed ports collide with other jobs)."""
import socket


def free_port(host: str = '127.0.0.1') -> int:
    """A port the OS reports free on ``host`` now (it may be taken again before use, but not by a fixed choice)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
