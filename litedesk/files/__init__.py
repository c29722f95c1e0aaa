"""File transfer as RustDesk speaks it (docs/protocol.rst §12).

The pieces both sides share are here: L{litedesk.files.blocks} (a block's
encoding: 128 KiB of a file, zstd-compressed when that is shorter) and
L{litedesk.files.partial} (a file being received: C{NAME.download} with its
C{NAME.digest}, renamed onto C{NAME} when complete).  The host's side is
L{litedesk.files.root} (every path kept inside the file root),
L{litedesk.files.listing} (directory listings as C{FileDirectory}s),
L{litedesk.files.host_jobs} and L{litedesk.files.host_upload} (the
download and upload state machines) and
L{litedesk.files.host_service} (C{FileAction}/C{FileResponse} dispatch), all
sans-IO apart from the file system; L{litedesk.session.host_files} plugs them
into the host session.  The viewer's side is L{litedesk.files.client}.
They follow hbb_common C{src/fs.rs} and rustdesk
C{src/server/connection.rs}.
"""
