"""Remote input for LiteDesk: keys, mouse, injection on the host, clipboard.

* L{litedesk.input.keys}: RustDesk's ControlKey numbering and L{KeyInput};
  L{litedesk.input.keysyms}: X keysym mappings in both directions;
  L{litedesk.input.key_combos}: C{"ctrl+a,Return"} parsing.
* L{litedesk.input.mouse}: the C{MouseEvent.mask} encoding, L{MouseInput}
  and the viewer's window -> remote-desktop coordinate mapping.
* L{litedesk.input.inject}: the host's injector with view-only mode and
  stuck-key safety, on L{litedesk.input.validation} (untrusted events into
  actions or L{litedesk.input.results}), the X backend
  L{litedesk.input.pynput_backend} (pynput, imported lazily) with
  L{litedesk.input.xtest_typer}, and L{litedesk.input.worker} (the input
  thread).
* L{litedesk.input.clipboard}: the host's X clipboard (xclip) and its
  change watcher.

Importing this package needs no X display.
"""

from litedesk.input.key_combos import parse_combo, parse_key_list, text_input
from litedesk.input.keys import ControlKey, KeyInput
from litedesk.input.mouse import MouseButton, MouseInput, MouseType, Rect, ViewMapping

__all__ = [
    "ControlKey",
    "KeyInput",
    "MouseButton",
    "MouseInput",
    "MouseType",
    "Rect",
    "ViewMapping",
    "parse_combo",
    "parse_key_list",
    "text_input",
]
