"""The process's open-file limit, shared by the relay and the host agent.

Every TCP connection costs a file descriptor; the usual soft limit (1,024)
is far below the usual hard limit, and a process that hits it cannot accept
anyone, not even the legitimate peer it exists for.  Both daemons therefore
raise their soft limit to the hard one at start, and size their connection
limits from what they got.
"""

from __future__ import annotations

__all__ = ["raise_nofile_limit"]


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, if it is lower.

    @return: the soft limit now in force (-1 where there is no such limit).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover (not POSIX)
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft
