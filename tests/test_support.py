"""The shared fixtures in tests/support: the skip helper fails in CI, the
polling helpers wait for a state and name it when it does not come, the
trial summary parser counts what ran and what was skipped."""

from __future__ import annotations

import io
import os
import socket
import sys
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from twisted.internet.task import Clock
from twisted.trial.reporter import TestResult
from twisted.trial.runner import TestLoader
from twisted.trial.unittest import FailTest, SkipTest, SynchronousTestCase

from .support import skips, trial_summary
from .support.coverage_table import by_package
from .support.images import mean_error, paint_test_screen
from .support.polling import WaitTimeout, until, wait_until
from .support.ports import free_port_pair

MISSING_TOOL = "litedesk-no-such-tool-7f3a"


def _set_ci(case: SynchronousTestCase, value: str | None) -> None:
    """Run the rest of C{case} with C{CI} set to C{value} (unset for None)."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if value is not None:
        env["CI"] = value
    case.patch(os, "environ", env)


def _run(case: type[SynchronousTestCase]) -> TestResult:
    result = TestResult()
    TestLoader().loadClass(case).run(result)
    return result


class RequiresTests(SynchronousTestCase):
    def _ci(self, value: str | None) -> None:
        _set_ci(self, value)

    def _case(self) -> type[SynchronousTestCase]:
        class Needy(SynchronousTestCase):
            ran = False

            def test_it(self) -> None:
                Needy.ran = True

        return Needy

    def test_skips_outside_ci_naming_what_to_install(self) -> None:
        self._ci(None)
        case = skips.requires(MISSING_TOOL)(self._case())
        result = _run(case)
        self.assertEqual((len(result.skips), result.errors, result.failures), (1, [], []))
        self.assertIn(MISSING_TOOL, str(result.skips[0][1]))
        self.assertFalse(case.ran)  # type: ignore[attr-defined]

    def test_fails_in_ci(self) -> None:
        """With CI=true the class is not skipped: each test fails, saying why."""
        self._ci("true")
        case = skips.requires(MISSING_TOOL)(self._case())
        result = _run(case)
        self.assertEqual(len(result.skips), 0)
        problems = result.errors + result.failures
        self.assertEqual(len(problems), 1)
        self.assertIn(MISSING_TOOL, str(problems[0][1]))
        self.assertFalse(case.ran)  # type: ignore[attr-defined]

    def test_runs_when_met(self) -> None:
        self._ci("true")
        case = skips.requires("sh")(self._case())
        result = _run(case)
        self.assertTrue(result.wasSuccessful())
        self.assertTrue(case.ran)  # type: ignore[attr-defined]

    def test_cannot_run_skips_outside_ci_and_fails_in_ci(self) -> None:
        _set_ci(self, "")
        with self.assertRaises(SkipTest) as skipped:
            skips.cannot_run("needs a big buffer")
        self.assertEqual(str(skipped.exception), "needs a big buffer")
        _set_ci(self, "true")
        with self.assertRaises(FailTest) as failed:
            skips.cannot_run("needs a big buffer")
        self.assertIn("needs a big buffer", str(failed.exception))

    def test_in_ci_values(self) -> None:
        for value, expected in [(None, False), ("", False), ("false", False), ("0", False),
                                ("true", True), ("1", True), ("yes", True)]:  # fmt: skip
            self._ci(value)
            self.assertEqual(skips.in_ci(), expected, value)

    def test_missing_names_each_unmet_need(self) -> None:
        reason = skips.missing("sh", MISSING_TOOL, MISSING_TOOL + "2")
        assert reason is not None
        self.assertIn(MISSING_TOOL, reason)
        self.assertIn(MISSING_TOOL + "2", reason)
        self.assertNotIn("sh,", reason)
        self.assertIsNone(skips.missing("sh"))


class PollingTests(SynchronousTestCase):
    def test_wait_until_returns_the_value(self) -> None:
        calls = iter([0, None, "", "here"])
        self.assertEqual(wait_until(lambda: next(calls), 5, 0.001), "here")

    def test_wait_until_names_what_did_not_come(self) -> None:
        with self.assertRaises(WaitTimeout) as cm:
            wait_until(lambda: False, 0.01, 0.001, lambda: "the host to answer")
        self.assertIn("the host to answer", str(cm.exception))

    def test_until_runs_on_the_clock(self) -> None:
        clock = Clock()
        state = {"n": 0}
        d = until(lambda: state["n"] >= 3 and "done", timeout=10, interval=1, clock=clock)
        for _ in range(3):
            self.assertNoResult(d)
            state["n"] += 1
            clock.advance(1)
        self.assertEqual(self.successResultOf(d), "done")

    def test_until_fails_after_the_deadline(self) -> None:
        clock = Clock()
        d = until(lambda: False, timeout=5, interval=1, message="a frame", clock=clock)
        clock.pump([1] * 4)
        self.assertNoResult(d)
        clock.pump([1] * 2)
        self.assertIn("a frame", str(self.failureResultOf(d, WaitTimeout).value))


class PortAndImageTests(SynchronousTestCase):
    def test_free_port_pair_layout_is_free(self) -> None:
        port = free_port_pair()
        for p, kind in ((port - 1, socket.SOCK_STREAM), (port, socket.SOCK_DGRAM),
                        (port + 1, socket.SOCK_STREAM)):  # fmt: skip
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("127.0.0.1", p))

    def test_mean_error_sees_a_shift(self) -> None:
        screen = paint_test_screen(marker="m")
        self.assertEqual(mean_error(screen, screen), 0.0)
        shifted = screen.transform(screen.size, Image.Transform.AFFINE, (1, 0, 40, 0, 1, 0))
        self.assertGreater(mean_error(screen, shifted), 10)


def _render(ran: int, counts: dict[str, int], passed: bool) -> str:
    fields = ", ".join(f"{k}={v}" for k, v in counts.items())
    verdict = "PASSED" if passed else "FAILED"
    return (
        "tests.test_x.T.test_y ... [OK]\n\n"
        "===============================================================================\n"
        f"[SKIPPED]\nneeds Xvfb (PASSED (skips=99) in a reason is not the summary)\n\n"
        "-------------------------------------------------------------------------------\n"
        f"Ran {ran} test{'s' if ran != 1 else ''} in 12.345s\n\n{verdict} ({fields})\n"
    )


class TrialSummaryTests(SynchronousTestCase):
    @given(
        st.integers(0, 5000),
        st.dictionaries(
            st.sampled_from(["skips", "successes", "failures", "errors", "expectedFailures"]),
            st.integers(0, 5000),
            min_size=1,
        ),
        st.booleans(),
    )
    def test_parses_what_trial_prints(self, ran: int, counts: dict[str, int], passed: bool) -> None:
        summary = trial_summary.parse(_render(ran, counts, passed))
        assert summary is not None
        self.assertEqual((summary.ran, summary.passed, summary.counts), (ran, passed, counts))
        self.assertEqual(summary.skipped, counts.get("skips", 0))

    @given(st.text())
    def test_no_summary_in_arbitrary_text(self, text: str) -> None:
        summary = trial_summary.parse(text)
        if summary is not None:  # only when the text really holds both lines
            self.assertIn(f"Ran {summary.ran} test", text)

    def test_ci_fails_on_skips(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(_render(10, {"skips": 2, "successes": 8}, True))
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        _set_ci(self, "true")
        self.assertEqual(trial_summary.main([path]), 1)
        self.assertIn("ran 10, skipped 2", out.getvalue())
        self.assertIn("2 tests were skipped", err.getvalue())
        _set_ci(self, "")
        self.assertEqual(trial_summary.main([path]), 0)

    def test_no_summary_fails(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("Traceback (most recent call last):\n")
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(trial_summary.main([path]), 1)
        self.assertIn("no trial summary", err.getvalue())


class CoverageTableTests(SynchronousTestCase):
    def test_groups_by_package(self) -> None:
        def f(n: int, c: int) -> dict[str, Any]:
            return {"summary": {"num_statements": n, "covered_lines": c}}

        files = {
            "litedesk/__init__.py": f(2, 2),
            "litedesk/host_tap.py": f(10, 5),
            "litedesk/relay/server.py": f(100, 50),
            "/abs/litedesk/relay/leg/x.py": f(10, 10),
            "litedesk/session/tls.py": f(30, 0),
        }
        self.assertEqual(
            by_package(files),
            {"litedesk": (12, 7), "litedesk.relay": (110, 60), "litedesk.session": (30, 0)},
        )
