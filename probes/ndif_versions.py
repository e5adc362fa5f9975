"""The NDIF server's nnsight against this process's, checked before the first remote trace to each server.

nnsight sends a trace as the source of its ``with`` block plus pickled objects, and the
server rebuilds it with *its* nnsight. When the two versions differ, what fails (if
anything does) is deep inside the server: a traceback about a missing attribute or an
unexpected argument, sent back as the job's error. So before the first remote trace to
a server, steerscope asks the server what it runs (NDIF's ``/env``, what
``nnsight.compare()`` reads) and, when its nnsight is not this one, stops with the
command that installs the server's version. ``STEERSCOPE_ALLOW_NNSIGHT_SKEW=1`` goes on
anyway (with a warning). A server that does not answer ``/env`` (an older NDIF) is let
through with a warning that says it could not be checked.

Example:
    >>> message = skew_message("http://127.0.0.1:8001", server="0.8.1", here="0.7.2")
    >>> "pip install nnsight==0.8.1" in message
    True
"""

from __future__ import annotations

import os
import warnings
from importlib.metadata import version
from typing import Any

ALLOW_SKEW = "STEERSCOPE_ALLOW_NNSIGHT_SKEW"
checked: dict[str, str | None] = {}  # server address -> its nnsight version (None: it did not say)


class NnsightVersionMismatch(RuntimeError):
    """The NDIF server runs another nnsight than this process."""


def skew_message(host: str, *, server: str, here: str) -> str:
    return (
        f"The NDIF server at {host} runs nnsight {server}; this process has nnsight {here}. A trace is rebuilt "
        f"on the server by its own nnsight, and across versions it can fail there or do something else. Install "
        f"the server's version here: pip install nnsight=={server} (steerscope supports nnsight >=0.8,<0.9), "
        f"or set {ALLOW_SKEW}=1 to send traces anyway."
    )


def server_env(host: str) -> dict[str, Any]:
    """NDIF's ``/env`` answer: its python version and packages by import name (what ``nnsight.compare()`` reads)."""
    import httpx

    response = httpx.get(f"{host}/env", timeout=httpx.Timeout(5.0, read=60.0))
    response.raise_for_status()
    return dict(response.json())


def check_server(host: str | None = None, *, local_version: str | None = None) -> str | None:
    """Once per server: its nnsight version, or NnsightVersionMismatch when it is not this process's.

    Args:
        host: the server (default: nnsight's ``CONFIG.API.HOST``, where remote traces go).
        local_version: this process's nnsight (default: the installed one).
    """
    from nnsight import CONFIG

    host = host or CONFIG.API.HOST
    here = local_version or version("nnsight")
    if host in checked:
        return checked[host]
    try:
        packages = server_env(host).get("packages", {})
    except Exception as error:
        warnings.warn(
            f"Could not read the NDIF server's versions at {host}/env ({type(error).__name__}: {error}); "
            "if remote traces fail inside the server, compare its nnsight with this one (nnsight.compare()).",
            stacklevel=3,
        )
        checked[host] = None
        return None
    server = packages.get("nnsight")
    checked[host] = server
    if server is not None and server != here:
        message = skew_message(host, server=server, here=here)
        if os.environ.get(ALLOW_SKEW) != "1":
            del checked[host]  # asked again next time, after the user has installed the right one
            raise NnsightVersionMismatch(message)
        warnings.warn(message, stacklevel=3)
    return server
