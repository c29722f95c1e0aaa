"""Whole-monitor grabs into our own MIT-SHM segments: the grab is the buffer.

mss' XShm backend has the X server write a grab into a shared-memory
segment and then copies it into a new C{bytearray}: at 1080p that is 8 MB
read and 8 MB written per frame, a measurable part of the host's CPU while a
window moves (the damage path grabs the whole monitor each frame then).
L{ShmGrabber} hands out the shared memory itself.  Two segments are used in
turn (double buffering), because the damage path compares each grab with
the one before: grab N is written into segment N % 2, so the buffer of grab
N stays valid and unchanged until grab N + 2 (a caller must keep only the
latest grab).  The buffers are writable (the damage path writes rectangles
into its copy of the screen).

libxcb and libxcb-shm are called through ctypes on a connection of our own
(mss' xcb bindings are private, and mss 9 has none).  Whatever prevents
shared memory (no MIT-SHM 1.2, a remote display, no libxcb-shm, no memfd)
raises L{ShmUnavailable}; the caller then grabs with mss.  Not thread-safe:
like any XCB connection here, one grabber belongs to one thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import os
from ctypes import POINTER, Structure, byref, c_char_p, c_int, c_uint, c_void_p
from ctypes import c_uint8 as u8
from ctypes import c_uint16 as u16
from ctypes import c_uint32 as u32
from dataclasses import dataclass
from typing import Any

from .loaded_libs import typed

__all__ = ["SLACK", "ShmGrabError", "ShmGrabber", "ShmUnavailable"]

#: Bytes mapped after a grab's last pixel: libswscale's vector code reads up
#: to 64 bytes past a box (L{litedesk.screen.swscale.DirectConverter}), and
#: mappings are whole pages anyway.
SLACK = mmap.PAGESIZE

_Z_PIXMAP = 2
_ALL_PLANES = 0xFFFFFFFF
_LSB_FIRST = 0
_TRUE_COLOR, _DIRECT_COLOR = 4, 5
_BGRX = (0xFF0000, 0x00FF00, 0x0000FF)  # red, green and blue masks


class ShmUnavailable(Exception):
    """Shared-memory grabs cannot be set up here; grab another way."""


class ShmGrabError(Exception):
    """A grab failed (an X error, the connection lost)."""


# The xcb structures read here (xcb.h, xproto.h, shm.h), up to the last field
# used; fields named "_" are the ones skipped over.
class _Cookie(Structure):
    _fields_ = [("sequence", c_uint)]


class _Error(Structure):
    _fields_ = [("response_type", u8), ("error_code", u8)]


class _Extension(Structure):
    _fields_ = [("name", c_char_p), ("global_id", c_int)]


class _ExtensionReply(Structure):
    _fields_ = [("_", u8 * 8), ("present", u8)]


class _VersionReply(Structure):
    _fields_ = [("_", u8 * 8), ("major", u16), ("minor", u16)]


class _ImageReply(Structure):
    _fields_ = [("_", u8), ("depth", u8), ("_2", u8 * 10), ("size", u32)]


class _Setup(Structure):
    _fields_ = [("_", u8 * 29), ("formats_len", u8), ("byte_order", u8)]


class _Format(Structure):
    _fields_ = [("depth", u8), ("bits_per_pixel", u8), ("scanline_pad", u8), ("_", u8 * 5)]


class _Screen(Structure):
    _fields_ = [("root", u32), ("_", u32 * 4), ("_2", u16 * 6), ("visual", u32)]
    _fields_ += [("_3", u8 * 2), ("depth", u8)]


class _Depth(Structure):
    _fields_ = [("depth", u8), ("_", u8), ("visuals_len", u16), ("_2", u8 * 4)]


class _Visual(Structure):
    _fields_ = [("id", u32), ("cls", u8), ("_", u8 * 3), ("masks", u32 * 3), ("_2", u8 * 4)]


class _Iter(Structure):  # xcb_screen_iterator_t, xcb_depth_iterator_t
    _fields_ = [("data", c_void_p), ("rem", c_int), ("index", c_int)]


@functools.cache
def _libs() -> tuple[ctypes.CDLL, ctypes.CDLL, Any]:
    """libxcb and libxcb-shm with the functions used typed, and libc's C{free}."""
    try:
        xcb, shm = ctypes.CDLL("libxcb.so.1"), ctypes.CDLL("libxcb-shm.so.0")
    except OSError as e:
        raise ShmUnavailable(f"libxcb or libxcb-shm cannot be loaded: {e}") from e
    C, It, Err = c_void_p, _Iter, POINTER(POINTER(_Error))
    typed(xcb, "xcb_connect", C, c_char_p, POINTER(c_int))
    typed(xcb, "xcb_connection_has_error", c_int, C)
    typed(xcb, "xcb_disconnect", None, C)
    typed(xcb, "xcb_flush", c_int, C)
    typed(xcb, "xcb_generate_id", u32, C)
    typed(xcb, "xcb_request_check", POINTER(_Error), C, _Cookie)
    typed(xcb, "xcb_get_extension_data", POINTER(_ExtensionReply), C, POINTER(_Extension))
    typed(xcb, "xcb_get_setup", POINTER(_Setup), C)
    typed(xcb, "xcb_setup_roots_iterator", It, POINTER(_Setup))
    typed(xcb, "xcb_setup_pixmap_formats", POINTER(_Format), POINTER(_Setup))
    typed(xcb, "xcb_screen_next", None, POINTER(It))
    typed(xcb, "xcb_screen_allowed_depths_iterator", It, C)
    typed(xcb, "xcb_depth_next", None, POINTER(It))
    typed(xcb, "xcb_depth_visuals", POINTER(_Visual), C)
    typed(shm, "xcb_shm_query_version", _Cookie, C)
    typed(shm, "xcb_shm_query_version_reply", POINTER(_VersionReply), C, _Cookie, Err)
    typed(shm, "xcb_shm_attach_fd_checked", _Cookie, C, u32, ctypes.c_int32, u8)
    typed(shm, "xcb_shm_detach", _Cookie, C, u32)
    args = (C, u32, ctypes.c_int16, ctypes.c_int16, u16, u16, u32, u8, u32, u32)
    typed(shm, "xcb_shm_get_image", _Cookie, *args)
    typed(shm, "xcb_shm_get_image_reply", POINTER(_ImageReply), C, _Cookie, Err)
    return xcb, shm, typed(ctypes.CDLL(None), "free", None, C)


def _screen(xcb: ctypes.CDLL, conn: int, number: int) -> _Screen:
    """Screen C{number}, checked for 32-bit BGRx pixels as mss checks it."""
    setup = xcb.xcb_get_setup(conn)
    if setup.contents.byte_order != _LSB_FIRST:
        raise ShmUnavailable("the X server's images are not LSB first")
    it = xcb.xcb_setup_roots_iterator(setup)
    for _ in range(number):
        xcb.xcb_screen_next(byref(it))
    if it.rem <= 0:
        raise ShmUnavailable(f"the display has no screen {number}")
    screen = _Screen.from_address(it.data)
    if screen.depth not in (24, 32):
        raise ShmUnavailable(f"the screen's depth is {screen.depth}, not 24 or 32")
    formats = xcb.xcb_setup_pixmap_formats(setup)[: setup.contents.formats_len]
    if not any(
        f.depth == screen.depth and f.bits_per_pixel == f.scanline_pad == 32 for f in formats
    ):
        raise ShmUnavailable(f"depth {screen.depth} is not 4 bytes a pixel, unpadded")
    depths = xcb.xcb_screen_allowed_depths_iterator(it.data)
    while depths.rem > 0:
        depth = _Depth.from_address(depths.data)
        for v in xcb.xcb_depth_visuals(depths.data)[: depth.visuals_len]:
            if v.id == screen.visual and depth.depth == screen.depth:
                if v.cls not in (_TRUE_COLOR, _DIRECT_COLOR) or tuple(v.masks) != _BGRX:
                    raise ShmUnavailable("the root window's visual is not BGRx")
                return screen
        xcb.xcb_depth_next(byref(depths))
    raise ShmUnavailable("the root window's visual is not among the screen's")


@dataclass(frozen=True, slots=True)
class _Segment:
    seg: int
    mapping: mmap.mmap


class ShmGrabber:
    """Grabs of one X display's root window into two MIT-SHM segments.

    @param width: the first grab's size, so that segment setup fails here.
    @raise ShmUnavailable: shared-memory grabs cannot work on C{display}.
    """

    def __init__(self, display: str | None, width: int, height: int) -> None:
        self._xcb, self._shm, self._free = _libs()
        self._segments: list[_Segment] = []
        self._size = (0, 0)
        self._grabs = 0
        number = c_int(0)
        # xcb_connect never returns NULL: a failed connection has an error
        # set and must still be disconnected.
        self._conn: int | None = self._xcb.xcb_connect(
            display.encode() if display else None, byref(number)
        )
        try:
            if self._xcb.xcb_connection_has_error(self._conn):
                raise ShmUnavailable(f"cannot connect to display {display!r}")
            screen = _screen(self._xcb, self._conn, number.value)
            self._root, self._depth = screen.root, screen.depth
            self._check_shm()
            self._allocate(width, height)
        except BaseException:
            self.close()
            raise

    def _check_shm(self) -> None:
        ext = _Extension.in_dll(self._shm, "xcb_shm_id")
        data = self._xcb.xcb_get_extension_data(self._conn, byref(ext))
        if not data or not data.contents.present:
            raise ShmUnavailable("the X server has no MIT-SHM extension")
        err = POINTER(_Error)()
        cookie = self._shm.xcb_shm_query_version(self._conn)
        reply = self._shm.xcb_shm_query_version_reply(self._conn, cookie, byref(err))
        try:
            if not reply:
                raise ShmUnavailable("MIT-SHM QueryVersion failed")
            version = (reply.contents.major, reply.contents.minor)
        finally:
            self._free(reply)
            self._free(err)
        # Passing the segment as a file descriptor (AttachFd) is 1.2.
        if version < (1, 2):
            raise ShmUnavailable(f"MIT-SHM {version[0]}.{version[1]} has no AttachFd")

    def _allocate(self, width: int, height: int) -> None:
        """Two new segments for grabs of C{width x height} (the old ones go)."""
        self._release()
        self._size = (0, 0)
        size = width * height * 4 + SLACK
        for _ in range(2):
            try:
                fd = os.memfd_create("litedesk-grab", os.MFD_CLOEXEC)
            except OSError as e:
                raise ShmUnavailable(f"memfd_create failed: {e}") from e
            try:
                os.ftruncate(fd, size)
                mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            except OSError as e:
                os.close(fd)
                raise ShmUnavailable(f"cannot map {size} bytes of shared memory: {e}") from e
            seg = self._xcb.xcb_generate_id(self._conn)
            # From this call on the fd is libxcb's: it closes it once sent, or
            # at once if the connection is broken (xcbext.h on
            # xcb_send_request_with_fds), so it is never closed here, even on
            # failure.  CPython's mmap keeps a dup of it, closed with the
            # mapping.
            cookie = self._shm.xcb_shm_attach_fd_checked(self._conn, seg, fd, 0)
            err = self._xcb.xcb_request_check(self._conn, cookie)
            code = err.contents.error_code if err else None
            self._free(err)
            if code is not None or self._xcb.xcb_connection_has_error(self._conn):
                mapping.close()
                # A display over TCP gets no descriptor (BadMatch), or libxcb
                # shuts the connection when sending it fails.
                raise ShmUnavailable(f"MIT-SHM AttachFd failed (X error {code})")
            self._segments.append(_Segment(seg, mapping))
        self._size, self._grabs = (width, height), 0

    def _release(self) -> None:
        segments, self._segments = self._segments, []
        for s in segments:
            self._shm.xcb_shm_detach(self._conn, s.seg)
            # A caller still holding a grab keeps its mapping until the last
            # view of it goes (close() refuses while views exist).
            with contextlib.suppress(BufferError):
                s.mapping.close()
        if segments:
            self._xcb.xcb_flush(self._conn)

    def grab(self, x: int, y: int, width: int, height: int) -> memoryview:
        """The root window's pixels in this rectangle: BGRA, stride C{width * 4}.

        A writable view of exactly C{width * height * 4} bytes of a segment,
        with L{SLACK} more bytes of the mapping readable after it.  A new
        size allocates new segments; views of the old ones stay valid.

        @raise ShmGrabError: the X server refused, or the connection is lost.
        @raise ShmUnavailable: new segments could not be set up.
        """
        conn = self._conn
        if conn is None:
            raise ShmGrabError("the grabber is closed")
        # ctypes would silently truncate to X's 16-bit coordinates.
        if not (
            -0x8000 <= min(x, y) <= max(x, y) < 0x8000
            and 0 < min(width, height) <= max(width, height) < 0x10000
        ):
            raise ShmGrabError(f"{width}x{height}+{x}+{y} is outside X's coordinates")
        if (width, height) != self._size:
            self._allocate(width, height)
        need = width * height * 4
        segment = self._segments[self._grabs % 2]
        cookie = self._shm.xcb_shm_get_image(
            conn, self._root, x, y, width, height, _ALL_PLANES, _Z_PIXMAP, segment.seg, 0
        )
        err = POINTER(_Error)()
        reply = self._shm.xcb_shm_get_image_reply(conn, cookie, byref(err))
        try:
            if err:
                raise ShmGrabError(
                    f"ShmGetImage of {width}x{height}+{x}+{y}: X error {err.contents.error_code}"
                )
            if not reply:
                raise ShmGrabError(
                    f"the X connection failed ({self._xcb.xcb_connection_has_error(conn)})"
                )
            got = reply.contents
            if got.depth != self._depth or got.size != need:
                raise ShmGrabError(f"ShmGetImage wrote {got.size} bytes at depth {got.depth}")
        finally:
            self._free(reply)
            self._free(err)
        self._grabs += 1
        return memoryview(segment.mapping)[:need]

    def close(self) -> None:
        """Detach and unmap the segments, disconnect; calling it again does nothing.

        A mapping a caller still holds a view of is unmapped with the last
        view (the server no longer writes into it).
        """
        conn = self._conn
        if conn is None:
            return
        try:
            self._release()  # requests on a broken connection are dropped
        finally:
            self._conn = None
            self._xcb.xcb_disconnect(conn)
