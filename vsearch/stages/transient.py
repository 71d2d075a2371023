"""Is an error the network's (a refused or reset connection, a timeout), which a later
try may not meet? Recognised by class, across the libraries vsearch talks through
(botocore, redis, httpx and huggingface_hub, requests, urllib3) without importing them,
and along the chain of causes (``raise ... from e``), so a wrapped network error counts.
"""

from __future__ import annotations

# (top-level module, class name) of network errors; a class counts when it or any base does.
_NETWORK = {
    ("builtins", "ConnectionError"),  # refused, reset, aborted, broken pipe
    ("builtins", "TimeoutError"),  # socket.timeout too
    ("socket", "gaierror"),  # a name that did not resolve (DNS down)
    ("botocore", "ConnectionError"),  # EndpointConnectionError, ConnectTimeoutError
    ("botocore", "HTTPClientError"),  # ConnectionClosedError, ReadTimeoutError
    ("redis", "ConnectionError"),
    ("redis", "TimeoutError"),
    ("httpx", "NetworkError"),  # ConnectError, ReadError, WriteError
    ("httpx", "TimeoutException"),
    ("httpx", "RemoteProtocolError"),  # the server hung up mid-response
    ("requests", "ConnectionError"),
    ("requests", "Timeout"),
    ("urllib3", "NewConnectionError"),
    ("urllib3", "ProtocolError"),
    ("urllib3", "TimeoutError"),
}
# Subclasses of the above that a retry does not fix: a configuration, not the network.
_NOT_NETWORK = {
    ("huggingface_hub", "OfflineModeIsEnabled"),  # HF_HUB_OFFLINE=1: a ConnectionError
    ("redis", "AuthenticationError"),  # a redis ConnectionError
    ("redis", "AuthenticationWrongNumberOfArgsError"),
}


def _names(cls: type) -> set[tuple[str, str]]:
    # httpx2/httpcore2 (huggingface_hub's httpx) count as httpx.
    out = set()
    for c in cls.__mro__:
        top = c.__module__.partition(".")[0]
        top = "httpx" if top.startswith(("httpx", "httpcore")) else top
        out.add((top, c.__name__))
    return out


def is_network_error(error: BaseException) -> bool:
    """True when ``error``, or an error it was raised from, is a network error."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = _names(type(current))
        if names & _NOT_NETWORK:
            return False
        if names & _NETWORK:
            return True
        current = current.__cause__
    return False
