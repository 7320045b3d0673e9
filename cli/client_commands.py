"""Client commands: `add`, `name`, `get`, `car` against a running node over its HTTP API."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from .main import CliError, check_paths

CLI_APP = {"appId": "com.example.edgefiles-cli", "displayName": "edgefiles CLI", "version": "1.0"}
PIECE = 1 << 20
BOUNDARY = "edgefiles-upload-boundary-7f3a9c"
# The part name a PATH that is one file is sent under: the node answers such an upload with
# that file's CID, which no name is part of, so the file's own (which the node may refuse: not
# UTF-8, a backslash) plays no part.
LONE_FILE = "file"


# Examples at the end of each command's --help
ADD_EXAMPLES = """examples:
  edgefiles add ./dist --name my-app     upload a built app and serve it at my-app.actyx.localhost
  edgefiles add report.pdf               upload one file; prints its CID
  pg_dump shop | edgefiles add -         upload standard input as one file

A folder's paths are relative to it (its index.html at the root), as `edgefiles cid DIR`
computes them; files and folders whose names start with a dot are left out unless --hidden.
Without --token, a token is asked of the node for the app id com.example.edgefiles-cli."""
GET_EXAMPLES = """examples:
  edgefiles get my-app -o ./my-app       the folder a name points at, into a new folder
  edgefiles get bafy.../assets/app.js    one file inside a folder, as ./app.js
  edgefiles get bafy... -o - | less      a file to standard output

A file replaces what -o names; a folder is written into a new or empty folder only, so that
no files of something else are left mixed into it. Nothing is left behind when a download
fails."""
NAME_EXAMPLES = """examples:
  edgefiles name set my-app bafy...      point my-app at a CID (every node fetches and pins it)
  edgefiles name rm my-app               remove it on every node; prints the CID it had
  edgefiles name ls                      NAME, CID, last change (UTC) and whether it is all here"""
CAR_EXAMPLES = """examples:
  edgefiles car export my-app -o app.car   the DAG a name points at, as one CAR v1 file
  edgefiles car import app.car             its blocks stored here (verified); prints its roots"""


def _client_flags(p: argparse.ArgumentParser) -> None:
    # an empty EDGEFILES_NODE (set, but to nothing) is the default, as an unset one
    p.add_argument("--node", default=os.environ.get("EDGEFILES_NODE") or "http://127.0.0.1:4454",
                   help="node URL (EDGEFILES_NODE; default http://127.0.0.1:4454)")
    p.add_argument("--token", default=os.environ.get("EDGEFILES_TOKEN"),
                   help="bearer token (EDGEFILES_TOKEN); fetched from /api/v2/auth when absent")


def register(sub: argparse._SubParsersAction) -> None:
    add = sub.add_parser("add", help="upload files or folders to a node; prints one CID per path",
                         description="Upload files or folders to a node; prints one CID per PATH.",
                         epilog=ADD_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _client_flags(add)
    add.add_argument("--hidden", action="store_true", help="include dotfiles")
    add.add_argument("--name", help="point this name at the uploaded CID (one PATH only)")
    add.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    add.add_argument("paths", nargs="+", metavar="PATH", help="a file or folder; '-' for standard input")
    add.set_defaults(func=cmd_add)

    name = sub.add_parser("name", help="set, remove or list names", epilog=NAME_EXAMPLES,
                          description="Set, remove or list the names a swarm serves its content by.",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    name_sub = name.add_subparsers(dest="name_command", required=True, metavar="ACTION")
    set_ = name_sub.add_parser("set", help="point NAME at CID", description="Point NAME at CID.")
    set_.add_argument("name", metavar="NAME",
                      help="lower-case DNS labels joined by dots, e.g. my-app or shop.eu")
    set_.add_argument("cid", metavar="CID",
                      help="the CID the name points at (its blocks need not be here yet)")
    rm = name_sub.add_parser("rm", help="remove NAME",
                             description="Remove NAME; prints the CID it pointed at.")
    rm.add_argument("name", metavar="NAME", help="the name to remove (every node of the swarm forgets it)")
    ls = name_sub.add_parser("ls", help="list names", description="List names, one per line: NAME, CID, "
                             "last change (UTC) and whether its DAG is all on this node (tab-separated).")
    for p in (set_, rm, ls):
        _client_flags(p)
        p.set_defaults(func=cmd_name)

    get = sub.add_parser("get", help="download a file or a folder by CID or name",
                         description="Download a file or a folder by CID or name.", epilog=GET_EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _client_flags(get)
    get.add_argument("target", metavar="CID|NAME", help="what to download; a path may follow: CID/a/b")
    get.add_argument("-o", "--output", help="where to write (default: ./<CID|NAME>, or ./<its last segment> "
                     "when a path follows; '-' = stdout); a file there is replaced, a folder must be empty")
    get.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    get.set_defaults(func=cmd_get)

    car = sub.add_parser("car", help="export a DAG as a CAR file, or import one", epilog=CAR_EXAMPLES,
                         description="Export a DAG as a CAR v1 file, or import one.",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    car_sub = car.add_subparsers(dest="car_command", required=True, metavar="ACTION")
    export = car_sub.add_parser("export", help="the DAG of CID|NAME as a CAR v1 file")
    export.add_argument("target", metavar="CID|NAME", help="the root of the DAG to export")
    export.add_argument("-o", "--output", help="where to write (default: ./<CID|NAME>.car; '-' = stdout)")
    export.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    import_ = car_sub.add_parser("import", help="store the blocks of a CAR file; prints its roots")
    import_.add_argument("path", metavar="FILE.car", help="the CAR file; '-' for standard input")
    import_.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    for p in (export, import_):
        _client_flags(p)
        p.set_defaults(func=cmd_car)


def node_url(text: str) -> str:
    """--node as the base URL of requests: `host:port` taken as curl takes it (http); a URL
    that names no node's API (a bad port, a query, another scheme) is a CliError."""
    import httpx

    url = text.rstrip("/") if "://" in text else f"http://{text.rstrip('/')}"
    try:
        parsed = httpx.URL(url)
        reason = ("it is not http or https" if parsed.scheme not in ("http", "https")
                  else "it has no host" if not parsed.host
                  else "a node's URL has no query or fragment" if parsed.query or parsed.fragment
                  else f"port {parsed.port} is out of range" if (parsed.port or 0) > 65535
                  else None)
    except (httpx.InvalidURL, ValueError) as exc:
        reason = str(exc)
    if reason is not None:
        raise CliError(f"--node {text!r} is not a node's URL ({reason}); for example http://127.0.0.1:4454")
    return url


class NodeClient:
    def __init__(self, url: str, token: str | None):
        import httpx

        self.url = node_url(url)
        self._httpx = httpx
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(60, read=600))
        self.token = token or self._fetch_token()
        if not self.token.isascii() or not self.token.isprintable() or " " in self.token:
            raise CliError("the token is not one a node gives (it holds spaces or control characters)")
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    def _fetch_token(self) -> str:
        return self.request("POST", "/api/v2/auth", json=CLI_APP).json()["token"]

    def request(self, method: str, path: str, **kw):
        # reached, then lost: an upload may or may not be stored
        with self._told(method, path, self._httpx.HTTPError, " before it answered"):
            response = self.http.request(method, path, **kw)
        check(response)
        return response

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kw) -> Iterator:
        """`http.stream`, a node that cannot be reached or that breaks off before its answer's
        head told as `request` tells them (they were tracebacks)."""
        with self._told(method, path, self._httpx.RemoteProtocolError), \
                self.http.stream(method, path, **kw) as response:
            yield response

    @contextlib.contextmanager
    def _told(self, method: str, path: str, lost: type[Exception], when: str = "") -> Iterator[None]:
        """A node that cannot be reached, or (`lost`) that broke off `when`, as one CliError line."""
        try:
            yield
        except (self._httpx.ConnectError, self._httpx.ConnectTimeout) as exc:
            raise CliError(f"cannot reach node at {self.url}: {exc}") from None
        except lost as exc:
            raise CliError(f"the node at {self.url} broke off {method} {path}{when}: {exc}") from None


def check(response) -> None:
    if response.status_code < 400:
        return
    response.read()
    try:
        message = response.json()["message"]
    except Exception:
        message = response.text[:200]
    raise CliError(f"{response.request.method} {response.request.url.path}: {response.status_code} {message}")


class Progress:
    """A one-line progress bar on stderr, drawn only for a terminal and for long work (at
    least `least` units). Counts bytes (MiB and a rate shown) unless `unit` names the things."""

    line_open = False  # a bar is drawn and its line not ended: a message must start a line of its own

    def __init__(self, total: int, enabled: bool, least: int = 8 * PIECE, unit: str | None = None):
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled and sys.stderr.isatty() and total >= least
        self.unit = unit
        self.label = ""
        self.start = time.monotonic()
        self._drawn = 0.0

    def advance(self, n: int) -> None:
        self.update(self.done + n)

    def update(self, done: int, total: int | None = None, label: str | None = None) -> None:
        self.done = done
        self.total = max(total, 1) if total is not None else self.total
        self.label = label if label is not None else self.label
        now = time.monotonic()
        if self.enabled and (now - self._drawn > 0.1 or self.done >= self.total):
            self._drawn = now
            frac = min(self.done / self.total, 1.0)
            if self.unit is None:
                rate = self.done / max(now - self.start, 1e-6) / (1 << 20)
                figures = f"{self.done >> 20}/{self.total >> 20} MiB {rate:7.1f} MiB/s"
            else:
                figures = f"{self.done}/{self.total} {self.unit}"
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{self.label}[{bar:<30}] {frac:6.1%} {figures}\x1b[K")
            sys.stderr.flush()
            Progress.line_open = True

    def close(self) -> None:
        if self.enabled:
            end_progress_line()


def end_progress_line() -> None:
    """The line of a bar drawn ended, so that what is written next is a line of its own."""
    if Progress.line_open:
        sys.stderr.write("\n")
        Progress.line_open = False


def _part_header(filename: str) -> bytes:
    """A part's head. A line feed may stand in its quoted filename, where the node's parser
    looks for the carriage return that ends a header line; so a name with a carriage return
    also goes as `filename*` (RFC 8187), which the node takes first, and has it as %0D, as
    browsers write it, in `filename`."""
    escaped = filename.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "%0D")
    extended = f"; filename*=UTF-8''{quote(filename, safe='')}" if "\r" in filename else ""
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{escaped}"{extended}\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()


def multipart_body(files: list[tuple[str, Path]], looks: list[os.stat_result],
                   progress: Progress) -> tuple[int, Iterator[bytes]]:
    """(Content-Length, body pieces) of `files` as `looks` (their stat) found them: files are
    read as the body is sent, never held whole."""
    closing = f"--{BOUNDARY}--\r\n".encode()
    length = sum(len(_part_header(name)) + look.st_size + 2
                 for (name, _), look in zip(files, looks, strict=True)) + len(closing)

    def pieces() -> Iterator[bytes]:
        for (name, path), look in zip(files, looks, strict=True):
            yield _part_header(name)
            yield from _read_unchanged(path, look, progress)
            yield b"\r\n"
        yield closing

    return length, pieces()


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None


def _read_unchanged(path: Path, look: os.stat_result, progress: Progress) -> Iterator[bytes]:
    """The bytes of `path` as it was when `look` was taken, which the body's length counted.
    Raised before the last piece is sent when the file has changed (a growing log), so the body
    stays short of its length and the node stores nothing of it, whether the file is a part of
    a form (`add`) or the whole body (`car import`)."""
    try:
        f = open(path, "rb")
    except OSError as exc:  # gone or locked away since it was looked at
        raise CliError(f"{path}: {exc.strerror}") from None
    with f:
        left, held = look.st_size, b""
        while left and (piece := f.read(min(PIECE, left))):
            left -= len(piece)
            if held:
                progress.advance(len(held))
                yield held
            held = piece
        after = os.fstat(f.fileno())
        if left or f.read(1) or (after.st_size, after.st_mtime_ns) != (look.st_size, look.st_mtime_ns):
            raise CliError(f"{path} changed while it was being uploaded; nothing was stored")
        if held:
            progress.advance(len(held))
            yield held


def _check_name(name: str) -> None:
    """The node's own rule for a name, told here before anything is sent."""
    from edgefiles.ans.registry import NameRefused, check_name

    try:
        check_name(name)
    except NameRefused as refused:
        raise CliError(str(refused)) from None


def cmd_add(args: argparse.Namespace) -> int:
    from edgefiles.node.localfs import InputRefused

    if args.name is not None and len(args.paths) != 1:
        raise CliError("--name needs exactly one PATH")
    if args.name is not None:  # '' too: an unset $NAME must not upload unnamed in silence
        _check_name(args.name)  # before the upload, which may be gigabytes
    check_paths(args.paths)
    client = NodeClient(args.node, args.token)
    with tempfile.TemporaryDirectory(prefix="edgefiles-add-") as spool:
        try:  # every PATH read before the first upload: a refused one leaves nothing uploaded
            uploads = [_files_of(raw, args.hidden, Path(spool)) for raw in args.paths]
        except InputRefused as refused:
            raise CliError(str(refused)) from None
        for files, folder in uploads:
            _add_one(client, files, folder, args)
    return 0


def _spooled(source: BinaryIO, spool: Path) -> Path:
    """A stream (standard input, a pipe) as one file, as `ipfs add` reads it: written to a file
    of its own in `spool` first, since an upload states its length before its bytes."""
    fd, name = tempfile.mkstemp(dir=spool)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, PIECE)
    return Path(name)


def _local(raw: str, spool: Path) -> tuple[str, Path]:
    """PATH `raw` ('-': standard input) as FOLDER or FILE and the path to read it at, a stream
    spooled to a file in `spool`. InputRefused for what cannot be read."""
    from edgefiles.node.localfs import FILE, STREAM, input_kind

    if raw == "-":
        return FILE, _spooled(sys.stdin.buffer, spool)
    path = Path(raw)
    kind = input_kind(path)
    if kind == STREAM:
        with open(path, "rb") as source:
            return FILE, _spooled(source, spool)
    return kind, path


def _files_of(raw: str, hidden: bool, spool: Path) -> tuple[list[tuple[str, Path]], bool]:
    """(name in the upload, local path) of each file to upload for PATH `raw` ('-': standard
    input), and whether `raw` is a folder; a stream is spooled to a file in `spool`."""
    from edgefiles.node.localfs import FILE, counted, scan_folder

    kind, path = _local(raw, spool)
    if kind == FILE:
        return [(LONE_FILE, path)], False
    scan = scan_folder(path, hidden)
    for note in scan.notes():
        print(f"{raw}: {note}", file=sys.stderr)
    if scan.empty_dirs:
        empty = len(scan.empty_dirs)
        verb = "is" if empty == 1 else "are"
        print(f"note: {counted(empty, 'empty folder')} in {raw} {verb} not uploaded", file=sys.stderr)
    files = [("/".join(segments), p) for segments, p in scan.files]
    _check_upload_names(raw, [name for name, _ in files])
    if not files:
        raise CliError(f"{raw}: no files to upload")
    return files, True


def _check_upload_names(raw: str, names: list[str]) -> None:
    """A name the node would refuse (a backslash, `%2e%2e`...), told before the upload, by the
    node's own check: it used to be a 400 once every byte had been sent."""
    from edgefiles.web.errors import BadRequest
    from edgefiles.web.paths import upload_segments

    for name in names:
        try:
            upload_segments(name)
        except BadRequest as refused:
            raise CliError(f"{raw}/{name}: a node takes no such name ({refused.message})") from None


def _add_one(client: NodeClient, files: list[tuple[str, Path]], folder: bool,
             args: argparse.Namespace) -> None:
    """One PATH's upload; its CID printed, and named with --name. A folder's CID is a
    folder's even when it holds one file (the node wraps it), as `edgefiles cid` gives it: a
    one-page app named must be served as a page, not as a download."""
    looks = [_stat(path) for _, path in files]
    progress = Progress(sum(look.st_size for look in looks), not args.no_progress)
    length, body = multipart_body(files, looks, progress)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(length)}
    params = {"wrap-with-directory": "true"} if folder else {}
    cid = client.request("POST", "/api/v2/files", content=body, headers=headers, params=params).text
    progress.close()
    print(cid, flush=True)
    if args.name is not None:
        client.request("PUT", f"/api/v2/files/{quote(args.name, safe='')}", content=cid)
        info = client.request("GET", "/api/v2/node/info").json()
        print(f"{args.name} -> {cid}, served at {app_url(client.url, args.name, info)}", file=sys.stderr)


def app_url(node: str, name: str, info: dict) -> str:
    """Where the node at `node` serves `name` on its host route: its host suffix and API port
    as the node tells them (GET /api/v2/node/info)."""
    import httpx

    url = httpx.URL(node)
    port = str(info.get("apiPort") or url.port or "")
    shown = "" if port in ("", {"http": "80", "https": "443"}.get(url.scheme)) else f":{port}"
    return f"{url.scheme}://{name}.{info.get('hostSuffix', 'actyx.localhost')}{shown}/"


def cmd_name(args: argparse.Namespace) -> int:
    from edgefiles.node.localfs import counted

    client = NodeClient(args.node, args.token)
    if args.name_command in ("set", "rm"):
        _check_name(args.name)  # '..' would otherwise be a path the URL climbs out of
    if args.name_command == "set":
        client.request("PUT", f"/api/v2/files/{quote(args.name, safe='')}", content=args.cid)
        print(f"{args.name} -> {args.cid.strip()}", file=sys.stderr)
    elif args.name_command == "rm":
        print(client.request("DELETE", f"/api/v2/files/{quote(args.name, safe='')}").text)
    else:
        for entry in client.request("GET", "/api/v2/names").json():
            missing = counted(entry["missing"], "byte")
            state = "complete" if entry["complete"] else f"fetching, {missing} missing"
            print(f"{entry['name']}\t{entry['cid']}\t{entry['updated']}\t{state}")
    return 0


def _output(given: str | None) -> str | None:
    """-o as given; an empty one (`-o "$OUT"` with OUT unset) is an error, not the default."""
    if given == "":
        raise CliError("-o is empty: give a path, or '-' for standard output")
    return given


def _default_output(target: str) -> str:
    """Where `get` writes without -o: ./<CID|NAME>, or the last segment of a path after it
    (CID/a/b.txt lands as ./b.txt); never `.` or `..`, which would write into a folder here."""
    last = target.rstrip("/").rsplit("/", 1)[-1]
    return target.split("/", 1)[0] if last in ("", ".", "..") else last


def cmd_get(args: argparse.Namespace) -> int:
    out = _output(args.output) or _default_output(args.target)
    client = NodeClient(args.node, args.token)
    base = f"/api/v2/files/{quote(args.target)}"
    with client.stream("GET", base, headers={"Accept": "application/json"}) as response:
        check(response)
        if not _is_listing(response):
            _write_stream(response, out, not args.no_progress)
            return 0
        response.read()
        listing = response.json()
    if out == "-":
        raise CliError(f"{args.target} is a folder: give -o a folder to write it to, or take it as one file "
                       "with `edgefiles car export`")
    root = Path(out)
    # a folder's size is the sum of its files' (the listing says so): one bar for all of them
    total = sum(child["size"] for child in listing["directory"]["children"])
    progress = Progress(total, not args.no_progress)
    if root.is_dir() and any(root.iterdir()):
        raise CliError(f"{root} is a folder that holds files already: a folder is written into a new or "
                       "empty one only (remove it, or give -o another path)")
    try:
        if root.is_dir():  # empty: filled as it is, and emptied again when the download fails
            try:
                _write_tree(client, listing["directory"], root, progress)
            except BaseException:
                for entry in list(root.iterdir()):
                    _remove_tree(entry)
                raise
        else:
            with _built_beside(root) as building:
                _write_tree(client, listing["directory"], building, progress)
    finally:
        progress.close()
    print(str(root), file=sys.stderr)
    return 0


def _write_tree(client: NodeClient, directory: dict, root: Path, progress: Progress) -> None:
    """The folder the node listed as `directory`, written into `root` from one CAR of its DAG
    (a request per file took minutes for 100,000 files): every block checked against its CID
    here, so what is written is the DAG the CID names, whatever the node or the network
    between did. `progress` advances by each file's bytes."""
    import httpx
    from edgefiles.node import car
    from edgefiles.node.cid import parse
    from edgefiles.node.unpack import NotATree, TreeUnpacker
    from edgefiles.web.paths import check_segment

    cid = directory["cid"]
    unpacker = TreeUnpacker(parse(cid), check_segment)
    parser = car.CarParser()
    with _TreeFiles(root) as files, \
            client.stream("GET", f"/api/v2/files/{cid}", params={"format": "car"}) as response:
        check(response)
        try:
            files.apply(unpacker.start())
            for chunk in response.iter_bytes(PIECE):
                for block_cid, block in parser.feed(chunk):
                    progress.advance(files.apply(unpacker.feed(block_cid, block)))
            parser.finish()
            unpacker.finish()
        except (car.CarInvalid, NotATree) as exc:
            raise CliError(f"the node sent {cid} as a DAG that does not check out: {exc}") from None
        except httpx.HTTPError as exc:
            raise CliError(f"the node broke off the download of {cid}: {exc}") from None


class _TreeFiles:
    """The files of a tree being written, kept open while they are (at most OPEN_FILES)."""

    OPEN_FILES = 64

    def __init__(self, root: Path):
        self.root = root
        self._open: dict[tuple[str, ...], int] = {}  # oldest first

    def __enter__(self) -> _TreeFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()

    def apply(self, actions: list) -> int:
        """Carry out a TreeUnpacker's actions; the bytes of files they wrote."""
        from edgefiles.node.unpack import CopyRange, MakeDir, MakeFile, WriteAt

        written = 0
        for action in actions:
            target = self.root.joinpath(*action.path)
            try:
                if isinstance(action, MakeDir):
                    target.mkdir(exist_ok=True)
                elif isinstance(action, MakeFile):
                    self._keep(action.path, os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666))
                elif isinstance(action, WriteAt):
                    written += _write_at(self._fd(action.path), action.data, action.offset)
                elif isinstance(action, CopyRange):
                    data = os.pread(self._fd(action.source), action.length, action.source_offset)
                    written += _write_at(self._fd(action.path), data, action.offset)
            except OSError as exc:
                raise _cannot_write(target, exc) from None
        return written

    def _fd(self, path: tuple[str, ...]) -> int:
        fd = self._open.pop(path, None)
        if fd is None:  # closed to keep few open: written before, so there
            fd = os.open(self.root.joinpath(*path), os.O_RDWR)
        self._keep(path, fd)
        return fd

    def _keep(self, path: tuple[str, ...], fd: int) -> None:
        self._open[path] = fd
        if len(self._open) > self.OPEN_FILES:
            os.close(self._open.pop(next(iter(self._open))))


def _write_at(fd: int, data: bytes, offset: int) -> int:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done
    return len(data)


def _beside(out: Path) -> Path:
    """A name to write `out` under until it is whole: hidden, in the same folder (so a rename
    puts it in place), and short, where `out` plus a suffix could pass the 255 bytes a file
    name may have."""
    return out.parent / f".edgefiles-{secrets.token_hex(4)}.part"


def _cannot_write(out: Path, exc: OSError) -> CliError:
    if isinstance(exc, FileNotFoundError) and not out.parent.is_dir():
        return CliError(f"{out}: there is no folder {out.parent} to write it in")
    return CliError(f"cannot write {out}: {exc.strerror}")


@contextlib.contextmanager
def _built_beside(final: Path) -> Iterator[Path]:
    """A new folder, filled by the with-block under a name _beside `final` and renamed to it
    at the end; when the block fails, removed with all it holds."""
    if final.exists() or final.is_symlink():
        raise CliError(f"{final} is a file, where the folder would go")
    building = _beside(final)
    try:
        building.mkdir()
    except OSError as exc:
        raise _cannot_write(final, exc) from None
    try:
        yield building
        try:
            os.rename(building, final)
        except OSError as exc:  # something took its place meanwhile
            raise _cannot_write(final, exc) from None
    except BaseException:
        _remove_tree(building)
        raise


def _remove_tree(top: Path) -> None:
    """`rm -rf top`, with a list where shutil.rmtree recurses (a folder nested a thousand deep
    passed Python's recursion limit); what cannot be removed is left."""
    if top.is_symlink() or not top.is_dir():
        top.unlink(missing_ok=True)
        return
    folders, stack = [], [top]
    while stack:
        folder = stack.pop()
        folders.append(folder)
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _is_listing(response) -> bool:
    # A JSON *file* is served with Accept-Ranges; a directory listing is not.
    json_body = response.headers.get("content-type", "").startswith("application/json")
    return json_body and "accept-ranges" not in response.headers


def _write_stream(response, out: str, show_progress: bool = False, progress: Progress | None = None) -> None:
    """A download to `out` ('-': stdout), through a file _beside it; a progress bar of its
    own when the node tells the length (`show_progress`), or `progress` advanced (a folder's,
    which its caller closes). An answer cut short, or a place that cannot be written, leaves
    no file behind."""
    import httpx

    if out != "-" and Path(out).is_dir():
        raise CliError(f"{out} is a folder: give -o the file to write")
    length = response.headers.get("content-length", "")
    own = progress is None
    if progress is None:
        progress = Progress(int(length) if length.isascii() and length.isdigit() else 0, show_progress)
    tmp = None if out == "-" else _beside(Path(out))
    try:
        with contextlib.nullcontext(sys.stdout.buffer) if tmp is None else _created(tmp) as sink:
            for piece in response.iter_bytes(PIECE):
                sink.write(piece)
                progress.advance(len(piece))
            sink.flush()
        if tmp is not None:
            os.replace(tmp, out)
    except BaseException as exc:  # Ctrl-C and a full disk too: nothing left behind
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, httpx.HTTPError):
            where = "to stdout" if out == "-" else f"of {out}"
            raise CliError(f"the node broke off the download {where}: {exc}") from None
        if isinstance(exc, OSError) and tmp is not None:
            raise _cannot_write(Path(out), exc) from None
        raise
    finally:
        if own:
            progress.close()


def _created(path: Path) -> BinaryIO:
    """A new file at `path`, made with the modes the umask gives (as `open` would)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")


def cmd_car(args: argparse.Namespace) -> int:
    from edgefiles.node.localfs import FOLDER, InputRefused

    if args.car_command == "export":
        out = _output(args.output) or f"{args.target}.car"
        client = NodeClient(args.node, args.token)
        with client.stream("GET", f"/api/v2/files/{quote(args.target)}", params={"format": "car"}) as r:
            check(r)
            _write_stream(r, out, not args.no_progress)
        return 0
    check_paths([args.path])
    client = NodeClient(args.node, args.token)
    with tempfile.TemporaryDirectory(prefix="edgefiles-car-") as spool:
        try:
            kind, path = _local(args.path, Path(spool))
        except InputRefused as refused:
            raise CliError(str(refused)) from None
        if kind == FOLDER:
            raise CliError(f"{args.path} is a folder: give the CAR file to import ('-': standard input)")
        look = _stat(path)
        progress = Progress(look.st_size, not args.no_progress)
        headers = {"Content-Type": "application/vnd.ipld.car", "Content-Length": str(look.st_size)}
        body = _read_unchanged(path, look, progress)
        answer = client.request("POST", "/api/v2/car", content=body, headers=headers).json()
        progress.close()
    for root in answer["roots"]:
        print(root)
    print(f"{answer['blocks']} blocks stored", file=sys.stderr)
    return 0
