"""C{twistd litedesk-host}: the agent on the machine being controlled.

The plugin only names the options and the assembly: L{HostOptions} is the
command line, L{build_host_agent} builds the L{litedesk.host.agent.HostAgent}.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService

from litedesk.host.agent import build_host_agent
from litedesk.host.options import HostOptions as Options

__all__ = ["Options", "makeService"]


def makeService(config: Options, reactor: Any = None) -> IService:
    return build_host_agent(config, reactor)
