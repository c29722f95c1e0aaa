"""The host's message builders and its end-of-session summary, without a connection."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2 as pb
from litedesk.session.host_context import Display
from litedesk.session.host_messages import pick_codec, session_summary, switch_display


class SummaryTests(SynchronousTestCase):
    def test_rates_and_round_trips(self) -> None:
        """What the log line reports: fps, Mb/s, drops and the round trips."""
        stats = SimpleNamespace(frames=300, bytes=1_250_000, dropped=4)
        got = session_summary(stats, [10, 20, 31], 10.0)
        self.assertEqual(got["frames"], 300)
        self.assertEqual(got["fps"], 30.0)
        self.assertEqual(got["mbps"], 1.0)
        self.assertEqual(got["dropped"], 4)
        self.assertEqual((got["rtt_avg"], got["rtt_max"]), (20, 31))

    def test_nothing_streamed(self) -> None:
        """A session that never streamed reports zeros and no round trip."""
        got = session_summary(None, [], 1e-6)
        self.assertEqual((got["frames"], got["mbps"], got["dropped"]), (0, 0.0, 0))
        self.assertIsNone(got["rtt_avg"])
        self.assertIsNone(got["rtt_max"])


class BuilderTests(SynchronousTestCase):
    def test_switch_display_names_the_monitor(self) -> None:
        msg = switch_display(1, Display(1920, 0, 1280, 1024, "HDMI-1"))
        sd = msg.misc.switch_display
        self.assertEqual((sd.display, sd.x, sd.y, sd.width, sd.height), (1, 1920, 0, 1280, 1024))

    def test_codec_follows_what_the_viewer_decodes(self) -> None:
        option = pb.OptionMessage()
        option.supported_decoding.ability_vp9 = 1
        self.assertEqual(pick_codec(option, "h264"), "vp9")
        option.supported_decoding.ability_h264 = 1
        option.supported_decoding.prefer = pb.SupportedDecoding.H264
        self.assertEqual(pick_codec(option, "vp9"), "h264")
