"""The NDIF server's nnsight against this process's, checked before the first remote trace to each server.

nnsight sends a trace as the source of its ``with`` block plus pickled objects, and the
server rebuilds it with *its* nnsight. When the two versions differ, what fails (if
anything does) is deep inside the server: a traceback about a missing attribute or an
unexpected argument, sent back as the job's error. So before the first remote trace to
a server, steerscope asks the server what it runs (NDIF's ``/env``, what
``nnsight.compare()`` reads):

- another minor version (0.8 here, 0.9 there): stop with NnsightVersionMismatch and the
  command that installs the server's version (``STEERSCOPE_ALLOW_NNSIGHT_SKEW=1`` sends
  traces anyway, with a warning);
- the same minor version, another release or a development build: a warning with that
  command, and the traces go;
- a server that does not answer ``/env`` (an older NDIF): a warning that it could not be
  checked, and the traces go.

Example:
    >>> install_command("0.9.1")
    'pip install nnsight==0.9.1'
    >>> install_command("0.9.2.dev4+g1a2b3c")
    "pip install 'nnsight>=0.9,<0.10' (the server runs a development build, 0.9.2.dev4+g1a2b3c)"
"""

from __future__ import annotations

import json
import os
import urllib.request
import warnings
from importlib.metadata import version
from typing import Any

from packaging.version import Version

ALLOW_SKEW = "STEERSCOPE_ALLOW_NNSIGHT_SKEW"
checked: dict[str, str | None] = {}  # server address -> its nnsight version (None: it did not say)


class NnsightVersionMismatch(RuntimeError):
    """The NDIF server runs another nnsight than this process."""


def install_command(server: str) -> str:
    """What installs the server's nnsight here (a development build is not on PyPI: its minor series is)."""
    release = Version(server)
    if release.is_devrelease or release.local:
        major, minor = release.release[:2]
        return f"pip install 'nnsight>={major}.{minor},<{major}.{minor + 1}' (the server runs a development build, {server})"
    return f"pip install nnsight=={server}"


def skew_message(host: str, *, server: str, here: str) -> str:
    return (
        f"The NDIF server at {host} runs nnsight {server}; this process has nnsight {here}. A trace is rebuilt "
        f"on the server by its own nnsight, and across versions it can fail there or do something else. Install "
        f"the server's version here: {install_command(server)} (steerscope supports nnsight >=0.8,<0.9)."
    )


def same_series(server: str, here: str) -> bool:
    return Version(server).release[:2] == Version(here).release[:2]


def server_env(host: str) -> dict[str, Any]:
    """NDIF's ``/env`` answer: its python version and packages by import name (what ``nnsight.compare()`` reads)."""
    with urllib.request.urlopen(f"{host}/env", timeout=60.0) as response:
        return dict(json.loads(response.read()))


def check_server(host: str | None = None) -> str | None:
    """Once per server: its nnsight version; NnsightVersionMismatch when its minor version is not this process's.

    Args:
        host: the server (default: nnsight's ``CONFIG.API.HOST``, where remote traces go).
    """
    from nnsight import CONFIG

    host = host or CONFIG.API.HOST
    here = version("nnsight")
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
    if server is None or server == here:
        return server
    message = skew_message(host, server=server, here=here)
    if not same_series(server, here) and os.environ.get(ALLOW_SKEW) != "1":
        del checked[host]  # asked again next time, after the user has installed the right one
        raise NnsightVersionMismatch(f"{message} Or set {ALLOW_SKEW}=1 to send traces anyway.")
    warnings.warn(message, stacklevel=3)
    return server
