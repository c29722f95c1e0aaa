from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ControlKey(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Unknown: _ClassVar[ControlKey]
    Alt: _ClassVar[ControlKey]
    Backspace: _ClassVar[ControlKey]
    CapsLock: _ClassVar[ControlKey]
    Control: _ClassVar[ControlKey]
    Delete: _ClassVar[ControlKey]
    DownArrow: _ClassVar[ControlKey]
    End: _ClassVar[ControlKey]
    Escape: _ClassVar[ControlKey]
    F1: _ClassVar[ControlKey]
    F10: _ClassVar[ControlKey]
    F11: _ClassVar[ControlKey]
    F12: _ClassVar[ControlKey]
    F2: _ClassVar[ControlKey]
    F3: _ClassVar[ControlKey]
    F4: _ClassVar[ControlKey]
    F5: _ClassVar[ControlKey]
    F6: _ClassVar[ControlKey]
    F7: _ClassVar[ControlKey]
    F8: _ClassVar[ControlKey]
    F9: _ClassVar[ControlKey]
    Home: _ClassVar[ControlKey]
    LeftArrow: _ClassVar[ControlKey]
    Meta: _ClassVar[ControlKey]
    Option: _ClassVar[ControlKey]
    PageDown: _ClassVar[ControlKey]
    PageUp: _ClassVar[ControlKey]
    Return: _ClassVar[ControlKey]
    RightArrow: _ClassVar[ControlKey]
    Shift: _ClassVar[ControlKey]
    Space: _ClassVar[ControlKey]
    Tab: _ClassVar[ControlKey]
    UpArrow: _ClassVar[ControlKey]
    Numpad0: _ClassVar[ControlKey]
    Numpad1: _ClassVar[ControlKey]
    Numpad2: _ClassVar[ControlKey]
    Numpad3: _ClassVar[ControlKey]
    Numpad4: _ClassVar[ControlKey]
    Numpad5: _ClassVar[ControlKey]
    Numpad6: _ClassVar[ControlKey]
    Numpad7: _ClassVar[ControlKey]
    Numpad8: _ClassVar[ControlKey]
    Numpad9: _ClassVar[ControlKey]
    Cancel: _ClassVar[ControlKey]
    Clear: _ClassVar[ControlKey]
    Menu: _ClassVar[ControlKey]
    Pause: _ClassVar[ControlKey]
    Kana: _ClassVar[ControlKey]
    Hangul: _ClassVar[ControlKey]
    Junja: _ClassVar[ControlKey]
    Final: _ClassVar[ControlKey]
    Hanja: _ClassVar[ControlKey]
    Kanji: _ClassVar[ControlKey]
    Convert: _ClassVar[ControlKey]
    Select: _ClassVar[ControlKey]
    Print: _ClassVar[ControlKey]
    Execute: _ClassVar[ControlKey]
    Snapshot: _ClassVar[ControlKey]
    Insert: _ClassVar[ControlKey]
    Help: _ClassVar[ControlKey]
    Sleep: _ClassVar[ControlKey]
    Separator: _ClassVar[ControlKey]
    Scroll: _ClassVar[ControlKey]
    NumLock: _ClassVar[ControlKey]
    RWin: _ClassVar[ControlKey]
    Apps: _ClassVar[ControlKey]
    Multiply: _ClassVar[ControlKey]
    Add: _ClassVar[ControlKey]
    Subtract: _ClassVar[ControlKey]
    Decimal: _ClassVar[ControlKey]
    Divide: _ClassVar[ControlKey]
    Equals: _ClassVar[ControlKey]
    NumpadEnter: _ClassVar[ControlKey]
    RShift: _ClassVar[ControlKey]
    RControl: _ClassVar[ControlKey]
    RAlt: _ClassVar[ControlKey]
    VolumeMute: _ClassVar[ControlKey]
    VolumeUp: _ClassVar[ControlKey]
    VolumeDown: _ClassVar[ControlKey]
    Power: _ClassVar[ControlKey]
    CtrlAltDel: _ClassVar[ControlKey]
    LockScreen: _ClassVar[ControlKey]

class KeyboardMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Legacy: _ClassVar[KeyboardMode]
    Map: _ClassVar[KeyboardMode]
    Translate: _ClassVar[KeyboardMode]
    Auto: _ClassVar[KeyboardMode]

class ClipboardFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Text: _ClassVar[ClipboardFormat]
    Rtf: _ClassVar[ClipboardFormat]
    Html: _ClassVar[ClipboardFormat]
    ImageRgba: _ClassVar[ClipboardFormat]
    ImagePng: _ClassVar[ClipboardFormat]
    ImageSvg: _ClassVar[ClipboardFormat]
    Special: _ClassVar[ClipboardFormat]

class ImageQuality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NotSet: _ClassVar[ImageQuality]
    Low: _ClassVar[ImageQuality]
    Balanced: _ClassVar[ImageQuality]
    Best: _ClassVar[ImageQuality]

class Chroma(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    I420: _ClassVar[Chroma]
    I444: _ClassVar[Chroma]

class FileType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Dir: _ClassVar[FileType]
    DirLink: _ClassVar[FileType]
    DirDrive: _ClassVar[FileType]
    File: _ClassVar[FileType]
    FileLink: _ClassVar[FileType]
Unknown: ControlKey
Alt: ControlKey
Backspace: ControlKey
CapsLock: ControlKey
Control: ControlKey
Delete: ControlKey
DownArrow: ControlKey
End: ControlKey
Escape: ControlKey
F1: ControlKey
F10: ControlKey
F11: ControlKey
F12: ControlKey
F2: ControlKey
F3: ControlKey
F4: ControlKey
F5: ControlKey
F6: ControlKey
F7: ControlKey
F8: ControlKey
F9: ControlKey
Home: ControlKey
LeftArrow: ControlKey
Meta: ControlKey
Option: ControlKey
PageDown: ControlKey
PageUp: ControlKey
Return: ControlKey
RightArrow: ControlKey
Shift: ControlKey
Space: ControlKey
Tab: ControlKey
UpArrow: ControlKey
Numpad0: ControlKey
Numpad1: ControlKey
Numpad2: ControlKey
Numpad3: ControlKey
Numpad4: ControlKey
Numpad5: ControlKey
Numpad6: ControlKey
Numpad7: ControlKey
Numpad8: ControlKey
Numpad9: ControlKey
Cancel: ControlKey
Clear: ControlKey
Menu: ControlKey
Pause: ControlKey
Kana: ControlKey
Hangul: ControlKey
Junja: ControlKey
Final: ControlKey
Hanja: ControlKey
Kanji: ControlKey
Convert: ControlKey
Select: ControlKey
Print: ControlKey
Execute: ControlKey
Snapshot: ControlKey
Insert: ControlKey
Help: ControlKey
Sleep: ControlKey
Separator: ControlKey
Scroll: ControlKey
NumLock: ControlKey
RWin: ControlKey
Apps: ControlKey
Multiply: ControlKey
Add: ControlKey
Subtract: ControlKey
Decimal: ControlKey
Divide: ControlKey
Equals: ControlKey
NumpadEnter: ControlKey
RShift: ControlKey
RControl: ControlKey
RAlt: ControlKey
VolumeMute: ControlKey
VolumeUp: ControlKey
VolumeDown: ControlKey
Power: ControlKey
CtrlAltDel: ControlKey
LockScreen: ControlKey
Legacy: KeyboardMode
Map: KeyboardMode
Translate: KeyboardMode
Auto: KeyboardMode
Text: ClipboardFormat
Rtf: ClipboardFormat
Html: ClipboardFormat
ImageRgba: ClipboardFormat
ImagePng: ClipboardFormat
ImageSvg: ClipboardFormat
Special: ClipboardFormat
NotSet: ImageQuality
Low: ImageQuality
Balanced: ImageQuality
Best: ImageQuality
I420: Chroma
I444: Chroma
Dir: FileType
DirLink: FileType
DirDrive: FileType
File: FileType
FileLink: FileType

class IdPk(_message.Message):
    __slots__ = ("id", "pk", "litedesk_tls")
    ID_FIELD_NUMBER: _ClassVar[int]
    PK_FIELD_NUMBER: _ClassVar[int]
    LITEDESK_TLS_FIELD_NUMBER: _ClassVar[int]
    id: str
    pk: bytes
    litedesk_tls: bool
    def __init__(self, id: _Optional[str] = ..., pk: _Optional[bytes] = ..., litedesk_tls: _Optional[bool] = ...) -> None: ...

class SignedId(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    def __init__(self, id: _Optional[bytes] = ...) -> None: ...

class PublicKey(_message.Message):
    __slots__ = ("asymmetric_value", "symmetric_value")
    ASYMMETRIC_VALUE_FIELD_NUMBER: _ClassVar[int]
    SYMMETRIC_VALUE_FIELD_NUMBER: _ClassVar[int]
    asymmetric_value: bytes
    symmetric_value: bytes
    def __init__(self, asymmetric_value: _Optional[bytes] = ..., symmetric_value: _Optional[bytes] = ...) -> None: ...

class Hash(_message.Message):
    __slots__ = ("salt", "challenge")
    SALT_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    salt: str
    challenge: str
    def __init__(self, salt: _Optional[str] = ..., challenge: _Optional[str] = ...) -> None: ...

class FileTransfer(_message.Message):
    __slots__ = ("dir", "show_hidden")
    DIR_FIELD_NUMBER: _ClassVar[int]
    SHOW_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    dir: str
    show_hidden: bool
    def __init__(self, dir: _Optional[str] = ..., show_hidden: _Optional[bool] = ...) -> None: ...

class PortForward(_message.Message):
    __slots__ = ("host", "port")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class ViewCamera(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Terminal(_message.Message):
    __slots__ = ("service_id",)
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    service_id: str
    def __init__(self, service_id: _Optional[str] = ...) -> None: ...

class OSLogin(_message.Message):
    __slots__ = ("username", "password")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("username", "password", "my_id", "my_name", "option", "file_transfer", "port_forward", "view_camera", "terminal", "video_ack_required", "session_id", "version", "os_login", "my_platform", "hwid", "avatar")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    MY_ID_FIELD_NUMBER: _ClassVar[int]
    MY_NAME_FIELD_NUMBER: _ClassVar[int]
    OPTION_FIELD_NUMBER: _ClassVar[int]
    FILE_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    PORT_FORWARD_FIELD_NUMBER: _ClassVar[int]
    VIEW_CAMERA_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    VIDEO_ACK_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OS_LOGIN_FIELD_NUMBER: _ClassVar[int]
    MY_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    HWID_FIELD_NUMBER: _ClassVar[int]
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: bytes
    my_id: str
    my_name: str
    option: OptionMessage
    file_transfer: FileTransfer
    port_forward: PortForward
    view_camera: ViewCamera
    terminal: Terminal
    video_ack_required: bool
    session_id: int
    version: str
    os_login: OSLogin
    my_platform: str
    hwid: bytes
    avatar: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[bytes] = ..., my_id: _Optional[str] = ..., my_name: _Optional[str] = ..., option: _Optional[_Union[OptionMessage, _Mapping]] = ..., file_transfer: _Optional[_Union[FileTransfer, _Mapping]] = ..., port_forward: _Optional[_Union[PortForward, _Mapping]] = ..., view_camera: _Optional[_Union[ViewCamera, _Mapping]] = ..., terminal: _Optional[_Union[Terminal, _Mapping]] = ..., video_ack_required: _Optional[bool] = ..., session_id: _Optional[int] = ..., version: _Optional[str] = ..., os_login: _Optional[_Union[OSLogin, _Mapping]] = ..., my_platform: _Optional[str] = ..., hwid: _Optional[bytes] = ..., avatar: _Optional[str] = ...) -> None: ...

class Resolution(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class SupportedResolutions(_message.Message):
    __slots__ = ("resolutions",)
    RESOLUTIONS_FIELD_NUMBER: _ClassVar[int]
    resolutions: _containers.RepeatedCompositeFieldContainer[Resolution]
    def __init__(self, resolutions: _Optional[_Iterable[_Union[Resolution, _Mapping]]] = ...) -> None: ...

class DisplayInfo(_message.Message):
    __slots__ = ("x", "y", "width", "height", "name", "online", "cursor_embedded", "original_resolution", "scale")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_EMBEDDED_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    name: str
    online: bool
    cursor_embedded: bool
    original_resolution: Resolution
    scale: float
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., name: _Optional[str] = ..., online: _Optional[bool] = ..., cursor_embedded: _Optional[bool] = ..., original_resolution: _Optional[_Union[Resolution, _Mapping]] = ..., scale: _Optional[float] = ...) -> None: ...

class Features(_message.Message):
    __slots__ = ("privacy_mode", "terminal")
    PRIVACY_MODE_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    privacy_mode: bool
    terminal: bool
    def __init__(self, privacy_mode: _Optional[bool] = ..., terminal: _Optional[bool] = ...) -> None: ...

class CodecAbility(_message.Message):
    __slots__ = ("vp8", "vp9", "av1", "h264", "h265")
    VP8_FIELD_NUMBER: _ClassVar[int]
    VP9_FIELD_NUMBER: _ClassVar[int]
    AV1_FIELD_NUMBER: _ClassVar[int]
    H264_FIELD_NUMBER: _ClassVar[int]
    H265_FIELD_NUMBER: _ClassVar[int]
    vp8: bool
    vp9: bool
    av1: bool
    h264: bool
    h265: bool
    def __init__(self, vp8: _Optional[bool] = ..., vp9: _Optional[bool] = ..., av1: _Optional[bool] = ..., h264: _Optional[bool] = ..., h265: _Optional[bool] = ...) -> None: ...

class SupportedEncoding(_message.Message):
    __slots__ = ("h264", "h265", "vp8", "av1", "i444")
    H264_FIELD_NUMBER: _ClassVar[int]
    H265_FIELD_NUMBER: _ClassVar[int]
    VP8_FIELD_NUMBER: _ClassVar[int]
    AV1_FIELD_NUMBER: _ClassVar[int]
    I444_FIELD_NUMBER: _ClassVar[int]
    h264: bool
    h265: bool
    vp8: bool
    av1: bool
    i444: CodecAbility
    def __init__(self, h264: _Optional[bool] = ..., h265: _Optional[bool] = ..., vp8: _Optional[bool] = ..., av1: _Optional[bool] = ..., i444: _Optional[_Union[CodecAbility, _Mapping]] = ...) -> None: ...

class PeerInfo(_message.Message):
    __slots__ = ("username", "hostname", "platform", "displays", "current_display", "sas_enabled", "version", "features", "encoding", "resolutions", "platform_additions")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    DISPLAYS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_DISPLAY_FIELD_NUMBER: _ClassVar[int]
    SAS_ENABLED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    RESOLUTIONS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ADDITIONS_FIELD_NUMBER: _ClassVar[int]
    username: str
    hostname: str
    platform: str
    displays: _containers.RepeatedCompositeFieldContainer[DisplayInfo]
    current_display: int
    sas_enabled: bool
    version: str
    features: Features
    encoding: SupportedEncoding
    resolutions: SupportedResolutions
    platform_additions: str
    def __init__(self, username: _Optional[str] = ..., hostname: _Optional[str] = ..., platform: _Optional[str] = ..., displays: _Optional[_Iterable[_Union[DisplayInfo, _Mapping]]] = ..., current_display: _Optional[int] = ..., sas_enabled: _Optional[bool] = ..., version: _Optional[str] = ..., features: _Optional[_Union[Features, _Mapping]] = ..., encoding: _Optional[_Union[SupportedEncoding, _Mapping]] = ..., resolutions: _Optional[_Union[SupportedResolutions, _Mapping]] = ..., platform_additions: _Optional[str] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("error", "peer_info", "enable_trusted_devices")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PEER_INFO_FIELD_NUMBER: _ClassVar[int]
    ENABLE_TRUSTED_DEVICES_FIELD_NUMBER: _ClassVar[int]
    error: str
    peer_info: PeerInfo
    enable_trusted_devices: bool
    def __init__(self, error: _Optional[str] = ..., peer_info: _Optional[_Union[PeerInfo, _Mapping]] = ..., enable_trusted_devices: _Optional[bool] = ...) -> None: ...

class TestDelay(_message.Message):
    __slots__ = ("time", "from_client", "last_delay", "target_bitrate")
    TIME_FIELD_NUMBER: _ClassVar[int]
    FROM_CLIENT_FIELD_NUMBER: _ClassVar[int]
    LAST_DELAY_FIELD_NUMBER: _ClassVar[int]
    TARGET_BITRATE_FIELD_NUMBER: _ClassVar[int]
    time: int
    from_client: bool
    last_delay: int
    target_bitrate: int
    def __init__(self, time: _Optional[int] = ..., from_client: _Optional[bool] = ..., last_delay: _Optional[int] = ..., target_bitrate: _Optional[int] = ...) -> None: ...

class EncodedVideoFrame(_message.Message):
    __slots__ = ("data", "key", "pts")
    DATA_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PTS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    key: bool
    pts: int
    def __init__(self, data: _Optional[bytes] = ..., key: _Optional[bool] = ..., pts: _Optional[int] = ...) -> None: ...

class EncodedVideoFrames(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[EncodedVideoFrame]
    def __init__(self, frames: _Optional[_Iterable[_Union[EncodedVideoFrame, _Mapping]]] = ...) -> None: ...

class VideoFrame(_message.Message):
    __slots__ = ("vp9s", "h264s", "h265s", "vp8s", "av1s", "tiles", "display")
    VP9S_FIELD_NUMBER: _ClassVar[int]
    H264S_FIELD_NUMBER: _ClassVar[int]
    H265S_FIELD_NUMBER: _ClassVar[int]
    VP8S_FIELD_NUMBER: _ClassVar[int]
    AV1S_FIELD_NUMBER: _ClassVar[int]
    TILES_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_FIELD_NUMBER: _ClassVar[int]
    vp9s: EncodedVideoFrames
    h264s: EncodedVideoFrames
    h265s: EncodedVideoFrames
    vp8s: EncodedVideoFrames
    av1s: EncodedVideoFrames
    tiles: EncodedVideoFrames
    display: int
    def __init__(self, vp9s: _Optional[_Union[EncodedVideoFrames, _Mapping]] = ..., h264s: _Optional[_Union[EncodedVideoFrames, _Mapping]] = ..., h265s: _Optional[_Union[EncodedVideoFrames, _Mapping]] = ..., vp8s: _Optional[_Union[EncodedVideoFrames, _Mapping]] = ..., av1s: _Optional[_Union[EncodedVideoFrames, _Mapping]] = ..., tiles: _Optional[_Union[EncodedVideoFrames, _Mapping]] = ..., display: _Optional[int] = ...) -> None: ...

class MouseEvent(_message.Message):
    __slots__ = ("mask", "x", "y", "modifiers")
    MASK_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    MODIFIERS_FIELD_NUMBER: _ClassVar[int]
    mask: int
    x: int
    y: int
    modifiers: _containers.RepeatedScalarFieldContainer[ControlKey]
    def __init__(self, mask: _Optional[int] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., modifiers: _Optional[_Iterable[_Union[ControlKey, str]]] = ...) -> None: ...

class KeyEvent(_message.Message):
    __slots__ = ("down", "press", "control_key", "chr", "unicode", "seq", "win2win_hotkey", "modifiers", "mode")
    DOWN_FIELD_NUMBER: _ClassVar[int]
    PRESS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_KEY_FIELD_NUMBER: _ClassVar[int]
    CHR_FIELD_NUMBER: _ClassVar[int]
    UNICODE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    WIN2WIN_HOTKEY_FIELD_NUMBER: _ClassVar[int]
    MODIFIERS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    down: bool
    press: bool
    control_key: ControlKey
    chr: int
    unicode: int
    seq: str
    win2win_hotkey: int
    modifiers: _containers.RepeatedScalarFieldContainer[ControlKey]
    mode: KeyboardMode
    def __init__(self, down: _Optional[bool] = ..., press: _Optional[bool] = ..., control_key: _Optional[_Union[ControlKey, str]] = ..., chr: _Optional[int] = ..., unicode: _Optional[int] = ..., seq: _Optional[str] = ..., win2win_hotkey: _Optional[int] = ..., modifiers: _Optional[_Iterable[_Union[ControlKey, str]]] = ..., mode: _Optional[_Union[KeyboardMode, str]] = ...) -> None: ...

class CursorData(_message.Message):
    __slots__ = ("id", "hotx", "hoty", "width", "height", "colors")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOTX_FIELD_NUMBER: _ClassVar[int]
    HOTY_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    COLORS_FIELD_NUMBER: _ClassVar[int]
    id: int
    hotx: int
    hoty: int
    width: int
    height: int
    colors: bytes
    def __init__(self, id: _Optional[int] = ..., hotx: _Optional[int] = ..., hoty: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., colors: _Optional[bytes] = ...) -> None: ...

class CursorPosition(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ...) -> None: ...

class Clipboard(_message.Message):
    __slots__ = ("compress", "content", "width", "height", "format", "special_name")
    COMPRESS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_NAME_FIELD_NUMBER: _ClassVar[int]
    compress: bool
    content: bytes
    width: int
    height: int
    format: ClipboardFormat
    special_name: str
    def __init__(self, compress: _Optional[bool] = ..., content: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[_Union[ClipboardFormat, str]] = ..., special_name: _Optional[str] = ...) -> None: ...

class MultiClipboards(_message.Message):
    __slots__ = ("clipboards",)
    CLIPBOARDS_FIELD_NUMBER: _ClassVar[int]
    clipboards: _containers.RepeatedCompositeFieldContainer[Clipboard]
    def __init__(self, clipboards: _Optional[_Iterable[_Union[Clipboard, _Mapping]]] = ...) -> None: ...

class SupportedDecoding(_message.Message):
    __slots__ = ("ability_vp9", "ability_h264", "ability_h265", "prefer", "ability_vp8", "ability_av1", "i444", "prefer_chroma", "litedesk_tiles")
    class PreferCodec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Auto: _ClassVar[SupportedDecoding.PreferCodec]
        VP9: _ClassVar[SupportedDecoding.PreferCodec]
        H264: _ClassVar[SupportedDecoding.PreferCodec]
        H265: _ClassVar[SupportedDecoding.PreferCodec]
        VP8: _ClassVar[SupportedDecoding.PreferCodec]
        AV1: _ClassVar[SupportedDecoding.PreferCodec]
    Auto: SupportedDecoding.PreferCodec
    VP9: SupportedDecoding.PreferCodec
    H264: SupportedDecoding.PreferCodec
    H265: SupportedDecoding.PreferCodec
    VP8: SupportedDecoding.PreferCodec
    AV1: SupportedDecoding.PreferCodec
    ABILITY_VP9_FIELD_NUMBER: _ClassVar[int]
    ABILITY_H264_FIELD_NUMBER: _ClassVar[int]
    ABILITY_H265_FIELD_NUMBER: _ClassVar[int]
    PREFER_FIELD_NUMBER: _ClassVar[int]
    ABILITY_VP8_FIELD_NUMBER: _ClassVar[int]
    ABILITY_AV1_FIELD_NUMBER: _ClassVar[int]
    I444_FIELD_NUMBER: _ClassVar[int]
    PREFER_CHROMA_FIELD_NUMBER: _ClassVar[int]
    LITEDESK_TILES_FIELD_NUMBER: _ClassVar[int]
    ability_vp9: int
    ability_h264: int
    ability_h265: int
    prefer: SupportedDecoding.PreferCodec
    ability_vp8: int
    ability_av1: int
    i444: CodecAbility
    prefer_chroma: Chroma
    litedesk_tiles: int
    def __init__(self, ability_vp9: _Optional[int] = ..., ability_h264: _Optional[int] = ..., ability_h265: _Optional[int] = ..., prefer: _Optional[_Union[SupportedDecoding.PreferCodec, str]] = ..., ability_vp8: _Optional[int] = ..., ability_av1: _Optional[int] = ..., i444: _Optional[_Union[CodecAbility, _Mapping]] = ..., prefer_chroma: _Optional[_Union[Chroma, str]] = ..., litedesk_tiles: _Optional[int] = ...) -> None: ...

class OptionMessage(_message.Message):
    __slots__ = ("image_quality", "lock_after_session_end", "show_remote_cursor", "privacy_mode", "block_input", "custom_image_quality", "disable_audio", "disable_clipboard", "enable_file_transfer", "supported_decoding", "custom_fps", "disable_keyboard", "follow_remote_cursor", "follow_remote_window", "disable_camera", "terminal_persistent", "show_my_cursor")
    class BoolOption(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        NotSet: _ClassVar[OptionMessage.BoolOption]
        No: _ClassVar[OptionMessage.BoolOption]
        Yes: _ClassVar[OptionMessage.BoolOption]
    NotSet: OptionMessage.BoolOption
    No: OptionMessage.BoolOption
    Yes: OptionMessage.BoolOption
    IMAGE_QUALITY_FIELD_NUMBER: _ClassVar[int]
    LOCK_AFTER_SESSION_END_FIELD_NUMBER: _ClassVar[int]
    SHOW_REMOTE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_MODE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_INPUT_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_IMAGE_QUALITY_FIELD_NUMBER: _ClassVar[int]
    DISABLE_AUDIO_FIELD_NUMBER: _ClassVar[int]
    DISABLE_CLIPBOARD_FIELD_NUMBER: _ClassVar[int]
    ENABLE_FILE_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_DECODING_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FPS_FIELD_NUMBER: _ClassVar[int]
    DISABLE_KEYBOARD_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_REMOTE_CURSOR_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_REMOTE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    DISABLE_CAMERA_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_PERSISTENT_FIELD_NUMBER: _ClassVar[int]
    SHOW_MY_CURSOR_FIELD_NUMBER: _ClassVar[int]
    image_quality: ImageQuality
    lock_after_session_end: OptionMessage.BoolOption
    show_remote_cursor: OptionMessage.BoolOption
    privacy_mode: OptionMessage.BoolOption
    block_input: OptionMessage.BoolOption
    custom_image_quality: int
    disable_audio: OptionMessage.BoolOption
    disable_clipboard: OptionMessage.BoolOption
    enable_file_transfer: OptionMessage.BoolOption
    supported_decoding: SupportedDecoding
    custom_fps: int
    disable_keyboard: OptionMessage.BoolOption
    follow_remote_cursor: OptionMessage.BoolOption
    follow_remote_window: OptionMessage.BoolOption
    disable_camera: OptionMessage.BoolOption
    terminal_persistent: OptionMessage.BoolOption
    show_my_cursor: OptionMessage.BoolOption
    def __init__(self, image_quality: _Optional[_Union[ImageQuality, str]] = ..., lock_after_session_end: _Optional[_Union[OptionMessage.BoolOption, str]] = ..., show_remote_cursor: _Optional[_Union[OptionMessage.BoolOption, str]] = ..., privacy_mode: _Optional[_Union[OptionMessage.BoolOption, str]] = ..., block_input: _Optional[_Union[OptionMessage.BoolOption, str]] = ..., custom_image_quality: _Optional[int] = ..., disable_audio: _Optional[_Union[OptionMessage.BoolOption, str]] = ..., disable_clipboard: _Optional[_Union[OptionMessage.BoolOption, str]] = ..., enable_file_transfer: _Optional[_Union[OptionMessage.BoolOption, str]] = ..., supported_decoding: _Optional[_Union[SupportedDecoding, _Mapping]] = ..., custom_fps: _Optional[int] = ..., disable_keyboard: _Optional[_Union[OptionMessage.BoolOption, str]] = ..., follow_remote_cursor: _Optional[_Union[OptionMessage.BoolOption, str]] = ..., follow_remote_window: _Optional[_Union[OptionMessage.BoolOption, str]] = ..., disable_camera: _Optional[_Union[OptionMessage.BoolOption, str]] = ..., terminal_persistent: _Optional[_Union[OptionMessage.BoolOption, str]] = ..., show_my_cursor: _Optional[_Union[OptionMessage.BoolOption, str]] = ...) -> None: ...

class SwitchDisplay(_message.Message):
    __slots__ = ("display", "x", "y", "width", "height", "cursor_embedded", "resolutions", "original_resolution")
    DISPLAY_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_EMBEDDED_FIELD_NUMBER: _ClassVar[int]
    RESOLUTIONS_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    display: int
    x: int
    y: int
    width: int
    height: int
    cursor_embedded: bool
    resolutions: SupportedResolutions
    original_resolution: Resolution
    def __init__(self, display: _Optional[int] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., cursor_embedded: _Optional[bool] = ..., resolutions: _Optional[_Union[SupportedResolutions, _Mapping]] = ..., original_resolution: _Optional[_Union[Resolution, _Mapping]] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class PermissionInfo(_message.Message):
    __slots__ = ("permission", "enabled")
    class Permission(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Keyboard: _ClassVar[PermissionInfo.Permission]
        Clipboard: _ClassVar[PermissionInfo.Permission]
        Audio: _ClassVar[PermissionInfo.Permission]
        File: _ClassVar[PermissionInfo.Permission]
        Restart: _ClassVar[PermissionInfo.Permission]
        Recording: _ClassVar[PermissionInfo.Permission]
        BlockInput: _ClassVar[PermissionInfo.Permission]
    Keyboard: PermissionInfo.Permission
    Clipboard: PermissionInfo.Permission
    Audio: PermissionInfo.Permission
    File: PermissionInfo.Permission
    Restart: PermissionInfo.Permission
    Recording: PermissionInfo.Permission
    BlockInput: PermissionInfo.Permission
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    permission: PermissionInfo.Permission
    enabled: bool
    def __init__(self, permission: _Optional[_Union[PermissionInfo.Permission, str]] = ..., enabled: _Optional[bool] = ...) -> None: ...

class Misc(_message.Message):
    __slots__ = ("chat_message", "switch_display", "permission_info", "option", "close_reason", "refresh_video", "video_received", "auto_adjust_fps", "refresh_video_display")
    CHAT_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SWITCH_DISPLAY_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_INFO_FIELD_NUMBER: _ClassVar[int]
    OPTION_FIELD_NUMBER: _ClassVar[int]
    CLOSE_REASON_FIELD_NUMBER: _ClassVar[int]
    REFRESH_VIDEO_FIELD_NUMBER: _ClassVar[int]
    VIDEO_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    AUTO_ADJUST_FPS_FIELD_NUMBER: _ClassVar[int]
    REFRESH_VIDEO_DISPLAY_FIELD_NUMBER: _ClassVar[int]
    chat_message: ChatMessage
    switch_display: SwitchDisplay
    permission_info: PermissionInfo
    option: OptionMessage
    close_reason: str
    refresh_video: bool
    video_received: bool
    auto_adjust_fps: int
    refresh_video_display: int
    def __init__(self, chat_message: _Optional[_Union[ChatMessage, _Mapping]] = ..., switch_display: _Optional[_Union[SwitchDisplay, _Mapping]] = ..., permission_info: _Optional[_Union[PermissionInfo, _Mapping]] = ..., option: _Optional[_Union[OptionMessage, _Mapping]] = ..., close_reason: _Optional[str] = ..., refresh_video: _Optional[bool] = ..., video_received: _Optional[bool] = ..., auto_adjust_fps: _Optional[int] = ..., refresh_video_display: _Optional[int] = ...) -> None: ...

class MessageBox(_message.Message):
    __slots__ = ("msgtype", "title", "text", "link")
    MSGTYPE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    msgtype: str
    title: str
    text: str
    link: str
    def __init__(self, msgtype: _Optional[str] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., link: _Optional[str] = ...) -> None: ...

class FileEntry(_message.Message):
    __slots__ = ("entry_type", "name", "is_hidden", "size", "modified_time")
    ENTRY_TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IS_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_TIME_FIELD_NUMBER: _ClassVar[int]
    entry_type: FileType
    name: str
    is_hidden: bool
    size: int
    modified_time: int
    def __init__(self, entry_type: _Optional[_Union[FileType, str]] = ..., name: _Optional[str] = ..., is_hidden: _Optional[bool] = ..., size: _Optional[int] = ..., modified_time: _Optional[int] = ...) -> None: ...

class FileDirectory(_message.Message):
    __slots__ = ("id", "path", "entries")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    id: int
    path: str
    entries: _containers.RepeatedCompositeFieldContainer[FileEntry]
    def __init__(self, id: _Optional[int] = ..., path: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[FileEntry, _Mapping]]] = ...) -> None: ...

class ReadDir(_message.Message):
    __slots__ = ("path", "include_hidden")
    PATH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    path: str
    include_hidden: bool
    def __init__(self, path: _Optional[str] = ..., include_hidden: _Optional[bool] = ...) -> None: ...

class ReadEmptyDirs(_message.Message):
    __slots__ = ("path", "include_hidden")
    PATH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    path: str
    include_hidden: bool
    def __init__(self, path: _Optional[str] = ..., include_hidden: _Optional[bool] = ...) -> None: ...

class ReadEmptyDirsResponse(_message.Message):
    __slots__ = ("path", "empty_dirs")
    PATH_FIELD_NUMBER: _ClassVar[int]
    EMPTY_DIRS_FIELD_NUMBER: _ClassVar[int]
    path: str
    empty_dirs: _containers.RepeatedCompositeFieldContainer[FileDirectory]
    def __init__(self, path: _Optional[str] = ..., empty_dirs: _Optional[_Iterable[_Union[FileDirectory, _Mapping]]] = ...) -> None: ...

class ReadAllFiles(_message.Message):
    __slots__ = ("id", "path", "include_hidden")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    id: int
    path: str
    include_hidden: bool
    def __init__(self, id: _Optional[int] = ..., path: _Optional[str] = ..., include_hidden: _Optional[bool] = ...) -> None: ...

class FileRename(_message.Message):
    __slots__ = ("id", "path", "new_name")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    NEW_NAME_FIELD_NUMBER: _ClassVar[int]
    id: int
    path: str
    new_name: str
    def __init__(self, id: _Optional[int] = ..., path: _Optional[str] = ..., new_name: _Optional[str] = ...) -> None: ...

class FileAction(_message.Message):
    __slots__ = ("read_dir", "send", "receive", "create", "remove_dir", "remove_file", "all_files", "cancel", "send_confirm", "rename", "read_empty_dirs")
    READ_DIR_FIELD_NUMBER: _ClassVar[int]
    SEND_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    REMOVE_DIR_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FILE_FIELD_NUMBER: _ClassVar[int]
    ALL_FILES_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    SEND_CONFIRM_FIELD_NUMBER: _ClassVar[int]
    RENAME_FIELD_NUMBER: _ClassVar[int]
    READ_EMPTY_DIRS_FIELD_NUMBER: _ClassVar[int]
    read_dir: ReadDir
    send: FileTransferSendRequest
    receive: FileTransferReceiveRequest
    create: FileDirCreate
    remove_dir: FileRemoveDir
    remove_file: FileRemoveFile
    all_files: ReadAllFiles
    cancel: FileTransferCancel
    send_confirm: FileTransferSendConfirmRequest
    rename: FileRename
    read_empty_dirs: ReadEmptyDirs
    def __init__(self, read_dir: _Optional[_Union[ReadDir, _Mapping]] = ..., send: _Optional[_Union[FileTransferSendRequest, _Mapping]] = ..., receive: _Optional[_Union[FileTransferReceiveRequest, _Mapping]] = ..., create: _Optional[_Union[FileDirCreate, _Mapping]] = ..., remove_dir: _Optional[_Union[FileRemoveDir, _Mapping]] = ..., remove_file: _Optional[_Union[FileRemoveFile, _Mapping]] = ..., all_files: _Optional[_Union[ReadAllFiles, _Mapping]] = ..., cancel: _Optional[_Union[FileTransferCancel, _Mapping]] = ..., send_confirm: _Optional[_Union[FileTransferSendConfirmRequest, _Mapping]] = ..., rename: _Optional[_Union[FileRename, _Mapping]] = ..., read_empty_dirs: _Optional[_Union[ReadEmptyDirs, _Mapping]] = ...) -> None: ...

class FileTransferCancel(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class FileResponse(_message.Message):
    __slots__ = ("dir", "block", "error", "done", "digest", "empty_dirs")
    DIR_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    EMPTY_DIRS_FIELD_NUMBER: _ClassVar[int]
    dir: FileDirectory
    block: FileTransferBlock
    error: FileTransferError
    done: FileTransferDone
    digest: FileTransferDigest
    empty_dirs: ReadEmptyDirsResponse
    def __init__(self, dir: _Optional[_Union[FileDirectory, _Mapping]] = ..., block: _Optional[_Union[FileTransferBlock, _Mapping]] = ..., error: _Optional[_Union[FileTransferError, _Mapping]] = ..., done: _Optional[_Union[FileTransferDone, _Mapping]] = ..., digest: _Optional[_Union[FileTransferDigest, _Mapping]] = ..., empty_dirs: _Optional[_Union[ReadEmptyDirsResponse, _Mapping]] = ...) -> None: ...

class FileTransferDigest(_message.Message):
    __slots__ = ("id", "file_num", "last_modified", "file_size", "is_upload", "is_identical", "transferred_size", "is_resume")
    ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NUM_FIELD_NUMBER: _ClassVar[int]
    LAST_MODIFIED_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    IS_UPLOAD_FIELD_NUMBER: _ClassVar[int]
    IS_IDENTICAL_FIELD_NUMBER: _ClassVar[int]
    TRANSFERRED_SIZE_FIELD_NUMBER: _ClassVar[int]
    IS_RESUME_FIELD_NUMBER: _ClassVar[int]
    id: int
    file_num: int
    last_modified: int
    file_size: int
    is_upload: bool
    is_identical: bool
    transferred_size: int
    is_resume: bool
    def __init__(self, id: _Optional[int] = ..., file_num: _Optional[int] = ..., last_modified: _Optional[int] = ..., file_size: _Optional[int] = ..., is_upload: _Optional[bool] = ..., is_identical: _Optional[bool] = ..., transferred_size: _Optional[int] = ..., is_resume: _Optional[bool] = ...) -> None: ...

class FileTransferBlock(_message.Message):
    __slots__ = ("id", "file_num", "data", "compressed", "blk_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NUM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_FIELD_NUMBER: _ClassVar[int]
    BLK_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    file_num: int
    data: bytes
    compressed: bool
    blk_id: int
    def __init__(self, id: _Optional[int] = ..., file_num: _Optional[int] = ..., data: _Optional[bytes] = ..., compressed: _Optional[bool] = ..., blk_id: _Optional[int] = ...) -> None: ...

class FileTransferError(_message.Message):
    __slots__ = ("id", "error", "file_num")
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FILE_NUM_FIELD_NUMBER: _ClassVar[int]
    id: int
    error: str
    file_num: int
    def __init__(self, id: _Optional[int] = ..., error: _Optional[str] = ..., file_num: _Optional[int] = ...) -> None: ...

class FileTransferSendRequest(_message.Message):
    __slots__ = ("id", "path", "include_hidden", "file_num", "file_type")
    class FileType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Generic: _ClassVar[FileTransferSendRequest.FileType]
        Printer: _ClassVar[FileTransferSendRequest.FileType]
    Generic: FileTransferSendRequest.FileType
    Printer: FileTransferSendRequest.FileType
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    FILE_NUM_FIELD_NUMBER: _ClassVar[int]
    FILE_TYPE_FIELD_NUMBER: _ClassVar[int]
    id: int
    path: str
    include_hidden: bool
    file_num: int
    file_type: FileTransferSendRequest.FileType
    def __init__(self, id: _Optional[int] = ..., path: _Optional[str] = ..., include_hidden: _Optional[bool] = ..., file_num: _Optional[int] = ..., file_type: _Optional[_Union[FileTransferSendRequest.FileType, str]] = ...) -> None: ...

class FileTransferSendConfirmRequest(_message.Message):
    __slots__ = ("id", "file_num", "skip", "offset_blk")
    ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NUM_FIELD_NUMBER: _ClassVar[int]
    SKIP_FIELD_NUMBER: _ClassVar[int]
    OFFSET_BLK_FIELD_NUMBER: _ClassVar[int]
    id: int
    file_num: int
    skip: bool
    offset_blk: int
    def __init__(self, id: _Optional[int] = ..., file_num: _Optional[int] = ..., skip: _Optional[bool] = ..., offset_blk: _Optional[int] = ...) -> None: ...

class FileTransferDone(_message.Message):
    __slots__ = ("id", "file_num")
    ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NUM_FIELD_NUMBER: _ClassVar[int]
    id: int
    file_num: int
    def __init__(self, id: _Optional[int] = ..., file_num: _Optional[int] = ...) -> None: ...

class FileTransferReceiveRequest(_message.Message):
    __slots__ = ("id", "path", "files", "file_num", "total_size")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    FILE_NUM_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    id: int
    path: str
    files: _containers.RepeatedCompositeFieldContainer[FileEntry]
    file_num: int
    total_size: int
    def __init__(self, id: _Optional[int] = ..., path: _Optional[str] = ..., files: _Optional[_Iterable[_Union[FileEntry, _Mapping]]] = ..., file_num: _Optional[int] = ..., total_size: _Optional[int] = ...) -> None: ...

class FileRemoveDir(_message.Message):
    __slots__ = ("id", "path", "recursive")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    id: int
    path: str
    recursive: bool
    def __init__(self, id: _Optional[int] = ..., path: _Optional[str] = ..., recursive: _Optional[bool] = ...) -> None: ...

class FileRemoveFile(_message.Message):
    __slots__ = ("id", "path", "file_num")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_NUM_FIELD_NUMBER: _ClassVar[int]
    id: int
    path: str
    file_num: int
    def __init__(self, id: _Optional[int] = ..., path: _Optional[str] = ..., file_num: _Optional[int] = ...) -> None: ...

class FileDirCreate(_message.Message):
    __slots__ = ("id", "path")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    id: int
    path: str
    def __init__(self, id: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("signed_id", "public_key", "test_delay", "video_frame", "login_request", "login_response", "hash", "mouse_event", "cursor_data", "cursor_position", "cursor_id", "key_event", "clipboard", "file_action", "file_response", "misc", "message_box", "peer_info", "multi_clipboards")
    SIGNED_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    TEST_DELAY_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FRAME_FIELD_NUMBER: _ClassVar[int]
    LOGIN_REQUEST_FIELD_NUMBER: _ClassVar[int]
    LOGIN_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    MOUSE_EVENT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_DATA_FIELD_NUMBER: _ClassVar[int]
    CURSOR_POSITION_FIELD_NUMBER: _ClassVar[int]
    CURSOR_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_EVENT_FIELD_NUMBER: _ClassVar[int]
    CLIPBOARD_FIELD_NUMBER: _ClassVar[int]
    FILE_ACTION_FIELD_NUMBER: _ClassVar[int]
    FILE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    MISC_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_BOX_FIELD_NUMBER: _ClassVar[int]
    PEER_INFO_FIELD_NUMBER: _ClassVar[int]
    MULTI_CLIPBOARDS_FIELD_NUMBER: _ClassVar[int]
    signed_id: SignedId
    public_key: PublicKey
    test_delay: TestDelay
    video_frame: VideoFrame
    login_request: LoginRequest
    login_response: LoginResponse
    hash: Hash
    mouse_event: MouseEvent
    cursor_data: CursorData
    cursor_position: CursorPosition
    cursor_id: int
    key_event: KeyEvent
    clipboard: Clipboard
    file_action: FileAction
    file_response: FileResponse
    misc: Misc
    message_box: MessageBox
    peer_info: PeerInfo
    multi_clipboards: MultiClipboards
    def __init__(self, signed_id: _Optional[_Union[SignedId, _Mapping]] = ..., public_key: _Optional[_Union[PublicKey, _Mapping]] = ..., test_delay: _Optional[_Union[TestDelay, _Mapping]] = ..., video_frame: _Optional[_Union[VideoFrame, _Mapping]] = ..., login_request: _Optional[_Union[LoginRequest, _Mapping]] = ..., login_response: _Optional[_Union[LoginResponse, _Mapping]] = ..., hash: _Optional[_Union[Hash, _Mapping]] = ..., mouse_event: _Optional[_Union[MouseEvent, _Mapping]] = ..., cursor_data: _Optional[_Union[CursorData, _Mapping]] = ..., cursor_position: _Optional[_Union[CursorPosition, _Mapping]] = ..., cursor_id: _Optional[int] = ..., key_event: _Optional[_Union[KeyEvent, _Mapping]] = ..., clipboard: _Optional[_Union[Clipboard, _Mapping]] = ..., file_action: _Optional[_Union[FileAction, _Mapping]] = ..., file_response: _Optional[_Union[FileResponse, _Mapping]] = ..., misc: _Optional[_Union[Misc, _Mapping]] = ..., message_box: _Optional[_Union[MessageBox, _Mapping]] = ..., peer_info: _Optional[_Union[PeerInfo, _Mapping]] = ..., multi_clipboards: _Optional[_Union[MultiClipboards, _Mapping]] = ...) -> None: ...
