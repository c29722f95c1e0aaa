"""hbb.Message (protos/message.proto) against RustDesk's names and numbers.

A host or viewer built on these classes must read and write the same bytes
as a RustDesk peer for the subset LiteDesk uses (docs/protocol.rst §8),
so every field number, oneof membership and enum value is pinned here.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2 as m

# §8.3: Message oneof "union" members LiteDesk declares: (number, type).
MESSAGE_UNION = {
    "signed_id": (3, "SignedId"),
    "public_key": (4, "PublicKey"),
    "test_delay": (5, "TestDelay"),
    "video_frame": (6, "VideoFrame"),
    "login_request": (7, "LoginRequest"),
    "login_response": (8, "LoginResponse"),
    "hash": (9, "Hash"),
    "mouse_event": (10, "MouseEvent"),
    "cursor_data": (12, "CursorData"),
    "cursor_position": (13, "CursorPosition"),
    "cursor_id": (14, None),
    "key_event": (15, "KeyEvent"),
    "clipboard": (16, "Clipboard"),
    "file_action": (17, "FileAction"),
    "file_response": (18, "FileResponse"),
    "misc": (19, "Misc"),
    "message_box": (21, "MessageBox"),
    "peer_info": (25, "PeerInfo"),
    "multi_clipboards": (28, "MultiClipboards"),
}

FIELDS: dict[str, dict[str, int]] = {
    # File transfer (docs/protocol.rst §12), hbb_common message.proto's numbers.
    "FileAction": {
        "read_dir": 1,
        "send": 2,
        "receive": 3,
        "create": 4,
        "remove_dir": 5,
        "remove_file": 6,
        "all_files": 7,
        "cancel": 8,
        "send_confirm": 9,
        "rename": 10,
        "read_empty_dirs": 11,
    },
    "FileResponse": {
        "dir": 1,
        "block": 2,
        "error": 3,
        "done": 4,
        "digest": 5,
        "empty_dirs": 6,
    },
    "FileEntry": {"entry_type": 1, "name": 2, "is_hidden": 3, "size": 4, "modified_time": 5},
    "FileDirectory": {"id": 1, "path": 2, "entries": 3},
    "FileTransferDigest": {
        "id": 1,
        "file_num": 2,
        "last_modified": 3,
        "file_size": 4,
        "is_upload": 5,
        "is_identical": 6,
        "transferred_size": 7,
        "is_resume": 8,
    },
    "FileTransferBlock": {"id": 1, "file_num": 2, "data": 3, "compressed": 4, "blk_id": 5},
    "FileTransferSendConfirmRequest": {"id": 1, "file_num": 2, "skip": 3, "offset_blk": 4},
    "FileTransferReceiveRequest": {
        "id": 1,
        "path": 2,
        "files": 3,
        "file_num": 4,
        "total_size": 5,
    },
    "FileTransferSendRequest": {
        "id": 1,
        "path": 2,
        "include_hidden": 3,
        "file_num": 4,
        "file_type": 5,
    },
    "PortForward": {"host": 1, "port": 2},
    # litedesk_tls: LiteDesk's mark in a host's SignedId (docs/protocol.rst §11.5).
    "IdPk": {"id": 1, "pk": 2, "litedesk_tls": 8877},
    "SignedId": {"id": 1},
    "PublicKey": {"asymmetric_value": 1, "symmetric_value": 2},
    "Hash": {"salt": 1, "challenge": 2},
    "LoginRequest": {
        "username": 1,
        "password": 2,
        "my_id": 4,
        "my_name": 5,
        "option": 6,
        "file_transfer": 7,
        "port_forward": 8,
        "video_ack_required": 9,
        "session_id": 10,
        "version": 11,
        "os_login": 12,
        "my_platform": 13,
        "hwid": 14,
        "view_camera": 15,
        "terminal": 16,
        "avatar": 17,
    },
    "LoginResponse": {"error": 1, "peer_info": 2, "enable_trusted_devices": 3},
    "PeerInfo": {
        "username": 1,
        "hostname": 2,
        "platform": 3,
        "displays": 4,
        "current_display": 5,
        "sas_enabled": 6,
        "version": 7,
        "features": 9,
        "encoding": 10,
        "resolutions": 11,
        "platform_additions": 12,
    },
    "DisplayInfo": {
        "x": 1,
        "y": 2,
        "width": 3,
        "height": 4,
        "name": 5,
        "online": 6,
        "cursor_embedded": 7,
        "original_resolution": 8,
        "scale": 9,
    },
    "Resolution": {"width": 1, "height": 2},
    "SupportedEncoding": {"h264": 1, "h265": 2, "vp8": 3, "av1": 4, "i444": 5},
    "TestDelay": {"time": 1, "from_client": 2, "last_delay": 3, "target_bitrate": 4},
    # tiles: LiteDesk's screen tiles (docs/protocol.rst, "Screen tiles").
    "VideoFrame": {
        "vp9s": 6,
        "h264s": 10,
        "h265s": 11,
        "vp8s": 12,
        "av1s": 13,
        "display": 14,
        "tiles": 8877,
    },
    "EncodedVideoFrames": {"frames": 1},
    "EncodedVideoFrame": {"data": 1, "key": 2, "pts": 3},
    "MouseEvent": {"mask": 1, "x": 2, "y": 3, "modifiers": 4},
    "KeyEvent": {
        "down": 1,
        "press": 2,
        "control_key": 3,
        "chr": 4,
        "unicode": 5,
        "seq": 6,
        "win2win_hotkey": 7,
        "modifiers": 8,
        "mode": 9,
    },
    "CursorData": {"id": 1, "hotx": 2, "hoty": 3, "width": 4, "height": 5, "colors": 6},
    "CursorPosition": {"x": 1, "y": 2},
    "Clipboard": {
        "compress": 1,
        "content": 2,
        "width": 3,
        "height": 4,
        "format": 5,
        "special_name": 6,
    },
    "MultiClipboards": {"clipboards": 1},
    "Misc": {
        "chat_message": 4,
        "switch_display": 5,
        "permission_info": 6,
        "option": 7,
        "close_reason": 9,
        "refresh_video": 10,
        "video_received": 12,
        "auto_adjust_fps": 28,
        "refresh_video_display": 31,
    },
    "OptionMessage": {
        "image_quality": 1,
        "lock_after_session_end": 2,
        "show_remote_cursor": 3,
        "privacy_mode": 4,
        "block_input": 5,
        "custom_image_quality": 6,
        "disable_audio": 7,
        "disable_clipboard": 8,
        "enable_file_transfer": 9,
        "supported_decoding": 10,
        "custom_fps": 11,
        "disable_keyboard": 12,
        "follow_remote_cursor": 15,
        "follow_remote_window": 16,
        "disable_camera": 17,
        "terminal_persistent": 18,
        "show_my_cursor": 19,
    },
    "SupportedDecoding": {
        "ability_vp9": 1,
        "ability_h264": 2,
        "ability_h265": 3,
        "prefer": 4,
        "ability_vp8": 5,
        "ability_av1": 6,
        "i444": 7,
        "prefer_chroma": 8,
        "litedesk_tiles": 8877,  # LiteDesk: the viewer draws tiles
    },
    "SwitchDisplay": {
        "display": 1,
        "x": 2,
        "y": 3,
        "width": 4,
        "height": 5,
        "cursor_embedded": 6,
        "resolutions": 7,
        "original_resolution": 8,
    },
    "ChatMessage": {"text": 1},
    "PermissionInfo": {"permission": 1, "enabled": 2},
    "MessageBox": {"msgtype": 1, "title": 2, "text": 3, "link": 4},
}

# Fields whose wire type must be zigzag (sint32): a wrong type still parses
# but gives other numbers, so it is worth pinning.
SINT32 = {
    ("MouseEvent", "x"),
    ("MouseEvent", "y"),
    ("CursorPosition", "x"),
    ("CursorPosition", "y"),
    ("CursorData", "hotx"),
    ("CursorData", "hoty"),
    ("DisplayInfo", "x"),
    ("DisplayInfo", "y"),
    ("SwitchDisplay", "x"),
    ("SwitchDisplay", "y"),
}

ONEOFS = {
    "LoginRequest": {"file_transfer", "port_forward", "view_camera", "terminal"},
    "LoginResponse": {"error", "peer_info"},
    "VideoFrame": {"vp9s", "h264s", "h265s", "vp8s", "av1s", "tiles"},
    "KeyEvent": {"control_key", "chr", "unicode", "seq", "win2win_hotkey"},
    "Misc": set(FIELDS["Misc"]),
}

CONTROL_KEYS = (  # noqa: SIM905 - one string, in the order of the enum in message.proto
    "Unknown Alt Backspace CapsLock Control Delete DownArrow End Escape F1 F10 F11 F12 "
    "F2 F3 F4 F5 F6 F7 F8 F9 Home LeftArrow Meta Option PageDown PageUp Return RightArrow "
    "Shift Space Tab UpArrow Numpad0 Numpad1 Numpad2 Numpad3 Numpad4 Numpad5 Numpad6 "
    "Numpad7 Numpad8 Numpad9 Cancel Clear Menu Pause Kana Hangul Junja Final Hanja Kanji "
    "Convert Select Print Execute Snapshot Insert Help Sleep Separator Scroll NumLock RWin "
    "Apps Multiply Add Subtract Decimal Divide Equals NumpadEnter RShift RControl RAlt "
    "VolumeMute VolumeUp VolumeDown Power"
).split()


def _type(field: Any) -> str | None:
    return field.message_type.name if field.message_type is not None else None


class FieldNumberTests(SynchronousTestCase):
    def test_message_union(self) -> None:
        """
        Every declared Message member has RustDesk's number and type, all
        are in the "union" oneof, and the package is hbb.
        """
        descriptor = m.Message.DESCRIPTOR
        self.assertEqual(descriptor.full_name, "hbb.Message")
        union = descriptor.oneofs_by_name["union"]
        self.assertEqual({f.name: (f.number, _type(f)) for f in union.fields}, MESSAGE_UNION)
        self.assertEqual(len(descriptor.fields), len(MESSAGE_UNION))

    def test_fields(self) -> None:
        """
        Each message LiteDesk uses has exactly RustDesk's field numbers for
        the fields it declares (and declares no field RustDesk lacks).
        """
        for name, expected in FIELDS.items():
            with self.subTest(message=name):
                descriptor = m.DESCRIPTOR.message_types_by_name[name]
                self.assertEqual({f.name: f.number for f in descriptor.fields}, expected)

    def test_zigzag_coordinates(self) -> None:
        """Coordinates are sint32 as in RustDesk, so negative values are small on the wire."""
        for message, field in SINT32:
            with self.subTest(field=f"{message}.{field}"):
                descriptor = m.DESCRIPTOR.message_types_by_name[message]
                self.assertEqual(descriptor.fields_by_name[field].type, 17)  # TYPE_SINT32

    def test_oneofs(self) -> None:
        """The oneof groups have RustDesk's members, so "which one is set" means the same."""
        for name, members in ONEOFS.items():
            with self.subTest(message=name):
                descriptor = m.DESCRIPTOR.message_types_by_name[name]
                union = descriptor.oneofs_by_name["union"]
                self.assertEqual({f.name for f in union.fields}, members)

    def test_enums(self) -> None:
        """
        ControlKey numbers 0..79 in RustDesk's order plus CtrlAltDel 100 and
        LockScreen 101; KeyboardMode, ClipboardFormat, ImageQuality,
        BoolOption, PreferCodec and Chroma values as upstream.
        """
        expected_keys = {name: number for number, name in enumerate(CONTROL_KEYS)}
        expected_keys.update(CtrlAltDel=100, LockScreen=101)
        self.assertEqual(dict(m.ControlKey.items()), expected_keys)
        self.assertEqual(m.ControlKey.Value("Return"), 27)
        self.assertEqual(m.ControlKey.Value("Insert"), 58)
        self.assertEqual(
            dict(m.KeyboardMode.items()), {"Legacy": 0, "Map": 1, "Translate": 2, "Auto": 3}
        )
        self.assertEqual(
            dict(m.ClipboardFormat.items()),
            {
                "Text": 0,
                "Rtf": 1,
                "Html": 2,
                "ImageRgba": 21,
                "ImagePng": 22,
                "ImageSvg": 23,
                "Special": 31,
            },
        )
        self.assertEqual(
            dict(m.ImageQuality.items()), {"NotSet": 0, "Low": 2, "Balanced": 3, "Best": 4}
        )
        self.assertEqual(dict(m.OptionMessage.BoolOption.items()), {"NotSet": 0, "No": 1, "Yes": 2})
        self.assertEqual(
            dict(m.SupportedDecoding.PreferCodec.items()),
            {"Auto": 0, "VP9": 1, "H264": 2, "H265": 3, "VP8": 4, "AV1": 5},
        )
        self.assertEqual(dict(m.Chroma.items()), {"I420": 0, "I444": 1})


class VectorTests(SynchronousTestCase):
    def test_hash_vector(self) -> None:
        """§9 item 25: Message{hash{salt:"abcdef", challenge:"xyz123"}} serializes byte-exactly."""
        msg = m.Message(hash=m.Hash(salt="abcdef", challenge="xyz123"))
        self.assertEqual(msg.SerializeToString().hex(), "4a100a06616263646566120678797a313233")

    def test_mouse_vector(self) -> None:
        """§9 item 26: Message{mouse_event{mask:9, x:100, y:-5}} serializes exactly (zigzag)."""
        msg = m.Message(mouse_event=m.MouseEvent(mask=9, x=100, y=-5))
        self.assertEqual(msg.SerializeToString().hex(), "5207080910c8011809")
        parsed = m.Message.FromString(bytes.fromhex("5207080910c8011809"))
        self.assertEqual((parsed.mouse_event.x, parsed.mouse_event.y), (100, -5))

    def test_empty_message(self) -> None:
        """§9 item 26: the empty Message is zero bytes and parses with no member set."""
        self.assertEqual(m.Message().SerializeToString(), b"")
        self.assertIsNone(m.Message.FromString(b"").WhichOneof("union"))

    def test_test_delay_vector(self) -> None:
        """§9 item 23: Message{test_delay{time:1700000000000, from_client:true}} is byte-exact."""
        msg = m.Message(test_delay=m.TestDelay(time=1700000000000, from_client=True))
        self.assertEqual(msg.SerializeToString().hex(), "2a090880d095ffbc311001")

    def test_public_key_vector(self) -> None:
        """§9 item 24: Message{public_key} with the spec's values parses to those values."""
        wire = bytes.fromhex(
            "22540a2057db4b359f23ae5e146e4e2512056704722506348c150c14753d0c933d04d421"
            "123038890338447833b02d70b79ab38400cf9588d75284c39ea27f0458866e866615f58a"
            "46fd575e1ad91cdef3e6ec903dfb"
        )
        msg = m.Message.FromString(wire)
        self.assertEqual(msg.WhichOneof("union"), "public_key")
        self.assertEqual(len(msg.public_key.asymmetric_value), 32)
        self.assertEqual(len(msg.public_key.symmetric_value), 48)
        self.assertEqual(msg.SerializeToString(), wire)


class ToleranceTests(SynchronousTestCase):
    def test_unknown_members_and_fields(self) -> None:
        """
        A RustDesk peer's messages LiteDesk does not declare (audio_frame 11,
        file_action 17, a future 99) parse as "no member set" instead of
        failing, and unknown fields inside known messages are skipped.
        """
        audio = bytes.fromhex("5a03") + b"\x0a\x01\x00"  # Message{11: AudioFrame{data}}
        self.assertIsNone(m.Message.FromString(audio).WhichOneof("union"))
        future = bytes.fromhex("9a0602") + b"\x08\x01"  # field 99, length 2
        self.assertIsNone(m.Message.FromString(future).WhichOneof("union"))
        # KeyEvent with an unknown field 50 (varint) plus down=true.
        inner = b"\x08\x01" + bytes.fromhex("900301")
        wire = b"\x7a" + bytes([len(inner)]) + inner
        parsed = m.Message.FromString(wire)
        self.assertEqual(parsed.WhichOneof("union"), "key_event")
        self.assertTrue(parsed.key_event.down)

    def test_unknown_enum_values(self) -> None:
        """An unknown ControlKey number (a newer RustDesk key) is kept as its number."""
        wire = m.Message(key_event=m.KeyEvent(control_key=m.Power)).SerializeToString()
        wire = wire.replace(b"\x18\x4f", b"\x18\x7f")  # control_key 79 -> 127
        parsed = m.Message.FromString(wire)
        self.assertEqual(parsed.key_event.control_key, 127)

    def test_deep_nesting_rejected(self) -> None:
        """§9 item 28: 300,000 nested groups are a DecodeError, not a crash."""
        with self.assertRaises(DecodeError):
            m.Message.FromString(b"\x0b" * 300_000 + b"\x0c" * 300_000)


class CrossCheckTests(SynchronousTestCase):
    def test_input_control_keys_agree(self) -> None:
        """
        The input layer's ControlKey (litedesk.input.keys, which does not
        import protobuf) has exactly the wire enum's names and numbers, so a
        KeyEvent's control_key converts with ControlKey(n).
        """
        from litedesk.input.keys import ControlKey

        self.assertEqual({k.name: k.value for k in ControlKey}, dict(m.ControlKey.items()))
