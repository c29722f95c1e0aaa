"""LiteDesk test suite (run with C{python -m twisted.trial tests}).

Registers and loads a Hypothesis settings profile shared by every property
test: no per-example deadline (CI machines are slow and some examples build
multi-frame streams of hundreds of kilobytes), a modest number of examples,
and derandomized runs when the C{CI} environment variable is set so that CI
failures reproduce.
"""

from __future__ import annotations

import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a "test" extra; modules that need it import it.
    pass
else:
    settings.register_profile(
        "litedesk",
        deadline=None,
        max_examples=60,
        suppress_health_check=[HealthCheck.too_slow],
        derandomize=bool(os.environ.get("CI")),
        print_blob=True,
    )
    settings.load_profile("litedesk")
