"""The backup stage: every file system through tar (or an image) into one set of volumes."""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import BinaryIO, cast

from mkrec.backup import cutstream
from mkrec.backup.cutstream import CutStream
from mkrec.backup.dirsink import DirSink
from mkrec.backup.encryption import SetCipher
from mkrec.backup.frames import FRAME_SIZE, Seal
from mkrec.backup.imaging import ImageStream, open_image
from mkrec.backup.isosink import IsoSink
from mkrec.backup.manifest import StreamRecord
from mkrec.backup.setkey import new_set_key
from mkrec.backup.sources import Source, backup_sources, tar_argv, used_bytes
from mkrec.backup.stream import Readable, pump, widen_pipe
from mkrec.backup.tapesink import TapeSink
from mkrec.backup.volumes import Ask, SetInfo, Sink, VolumeWriter
from mkrec.config import Encrypt, Mode
from mkrec.context import Context
from mkrec.errors import CommandError, MkrecError
from mkrec.iso import BootPayload
from mkrec.layout.model import Layout
from mkrec.log import step
from mkrec.progress import Progress
from mkrec.runner import popen

log = logging.getLogger("mkrec.backup")


def ask_on_terminal(prompt: str) -> None:
    if not sys.stdin.isatty():
        raise MkrecError(f"{prompt}: no terminal to ask on", hint="run mkrec build on a terminal")
    input(prompt + " ")


def make_sink(ctx: Context, info: SetInfo, rescue: BootPayload | None, ask: Ask) -> Sink:
    mode = ctx.config.build.mode
    if mode is Mode.CD:
        return IsoSink(ctx, info, rescue, ask)
    if mode is Mode.PATH:
        return DirSink(ctx)
    if mode is Mode.TAPE:
        return TapeSink(ctx, ask)
    raise MkrecError(f"mode {mode} writes no backup")


def used_bytes_of(src: Source) -> int:
    try:
        if src.kind == "tar":
            return used_bytes(src.path)
        with open(src.device, "rb") as fh:
            return fh.seek(0, os.SEEK_END)
    except OSError:
        return 0


class StderrDrain(threading.Thread):
    """Reads a child's stderr while we read its stdout: tar can warn about many files, and a full
    pipe would stall it."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []

    def run(self) -> None:
        for raw in self.stream:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))


def backup(
    ctx: Context, rescue: BootPayload | None, ask: Ask = ask_on_terminal, layout: Layout | None = None
) -> Path:
    cfg = ctx.config
    set_id = str(uuid.uuid4())
    cipher, encryption = None, None
    if cfg.security.encrypt is Encrypt.AGE:
        key, encryption = new_set_key(cfg.security)
        cipher = SetCipher(key, set_id)
    info = SetInfo(
        set_id=set_id,
        set_name=ctx.set_name,
        host=ctx.hostname,
        date=ctx.started.isoformat(timespec="seconds"),
        mode=str(cfg.build.mode),
        encryption=encryption,
    )
    never = [cfg.build.output, ctx.staging] + ([cfg.path.dir] if cfg.path.dir else [])
    srcs = backup_sources(ctx, never, layout)
    sink = make_sink(ctx, info, rescue, ask)
    writer = VolumeWriter(info, sink, sink.work, cipher)
    total = sum(used_bytes_of(s) for s in srcs)
    overall = Progress("all file systems", total)
    cut = CutStream(
        writer,
        sink.capacity(),
        piece_max=cutstream.PIECE_MAX,  # read at run time: tests set smaller pieces
        on_volume=lambda n: overall.set_tag(f"volume {n}"),
    )
    overall.set_tag("volume 1")
    done_before = 0
    failed: list[str] = []
    try:
        for src in srcs:
            what = src.mountpoint or src.device
            with step(f"Backing up {what} ({src.device}, {src.fstype}, {src.kind})"):
                seal = cipher.stream(src.stream).seal if cipher else None
                size = _stream(ctx, src, cut, writer, never, overall, done_before, failed, seal)
                done_before += size
        trailer = writer.catalog_estimate(cut.pending_catalog_bytes)
        with step("Closing the last volume"):
            volumes = cut.finish(trailer)
        final = sink.commit(volumes)
    except OSError as exc:
        log.debug("backup failed", exc_info=True)
        sink.abort()
        writer.abort()
        if exc.errno == errno.ENOSPC:
            raise MkrecError(
                f"no space left on device while writing volume {cut.volume} of the backup set "
                "(earlier sets are untouched)",
                hint=f"free space on the output ({cfg.build.output}) or choose another [build] output",
            ) from None
        raise MkrecError(f"cannot write the backup set: {exc.strerror} ({exc.filename or ''})") from None
    except BaseException:
        sink.abort()
        writer.abort()
        raise
    overall.finish()
    log.info("Backup set %s: %d volume(s) in %s", info.set_name, volumes, final)
    if failed:
        raise UnreadableFiles(final, failed)
    return final


class UnreadableFiles(MkrecError):
    """The set is written and verified, but tar could not read some files (a failing disk)."""

    def __init__(self, set_dir: Path, paths: list[str]) -> None:
        more = " …" if len(paths) > 5 else ""
        super().__init__(
            f"the backup set is written, but {len(paths)} file(s) could not be read: "
            f"{', '.join(paths[:5])}{more} (each named above; a restore names them and leaves them out)",
            hint="an I/O error usually means a failing disk: check it (smartctl -a, dmesg) and back up again",
        )
        self.set_dir = set_dir


def _stream(
    ctx: Context,
    src: Source,
    cut: CutStream,
    writer: VolumeWriter,
    never: list[Path],
    overall: Progress,
    done_before: int,
    failed: list[str],
    seal: Seal | None = None,
) -> int:
    """One file system into the set; the paths of files tar could not read are added to failed."""
    cfg = ctx.config
    record = StreamRecord(
        name=src.stream,
        kind=src.kind,
        device=src.device,
        fstype=src.fstype,
        mountpoint=src.mountpoint,
        frame_size=FRAME_SIZE,
    )
    writer.start_stream(record)
    cut.start_stream(src.stream)
    progress = Progress(f"{src.mountpoint or src.device}", used_bytes_of(src))

    def tick(done: int) -> None:
        progress.set_tag(overall.tag)
        progress.update(done)
        overall.update(done_before + done)

    first: list[str] = []
    proc: subprocess.Popen[bytes] | None = None
    drain = None
    if src.kind == "tar":
        argv = tar_argv(src, cfg.source.exclude, never)
        proc = popen(argv)
        assert proc.stdout is not None and proc.stderr is not None
        widen_pipe(proc.stdout.fileno())
        drain = StderrDrain(proc.stderr)  # type: ignore[arg-type]
        drain.start()
        source: BinaryIO = proc.stdout  # type: ignore[assignment]
    else:
        image: ImageStream = open_image(src.device, src.fstype)
        proc, source, first = image.proc, image.reader, [image.catalog_line(src.stream)]
        record.image, record.fs_size = image.format, image.info.fs_size
        overall.total += image.info.used - progress.total  # the tool knows what is in use
        progress.total = image.info.used
    try:
        summary = pump(
            cast(Readable, source),
            src.stream,
            cut,
            level=cfg.compression.level,
            threads=cfg.compression.threads,
            scan_tar=src.kind == "tar",
            first_lines=first,
            progress=tick,
            seal=seal,
        )
    except BaseException:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        if proc is None:
            source.close()
    if proc is not None:
        if drain:
            code = proc.wait()
            drain.join()
            unreadable = _check_tar(proc, code, drain.lines)
            record.unreadable = [path for path, in_archive in unreadable if in_archive]
            failed += [posixpath.join(src.mountpoint, path) for path, _ in unreadable]
        else:
            image.finish()
    result = cut.end_stream()
    record.complete = True
    record.size = summary.size
    record.compressed_size = result.compressed_size
    progress.finish()
    log.info("    %s: %d entries, %d bytes -> %d compressed", src.stream, summary.entries, summary.size,
             result.compressed_size)  # fmt: skip
    return summary.size


# What tar says of a file it could not read (a bad sector, a vanished device): it goes on with the
# rest and exits 2. "Read error" members are in the archive, their unread bytes as zeros; the others
# are not in it at all.
TAR_UNREADABLE = re.compile(
    r"^tar: (?P<path>.+?): (?P<what>Read error at byte \d+, while reading \d+ bytes|Cannot open|Cannot read|"
    r"Cannot stat|Cannot readlink): (?P<why>.+)$"
)
TAR_FAILURE_SUMMARY = "tar: Exiting with failure status due to previous errors"


def _check_tar(proc: subprocess.Popen[bytes], code: int, lines: list[str]) -> list[tuple[str, bool]]:
    """tar exit 1 means some files changed or vanished while read: the backup is still good, the
    user is told which. Exit 2 with nothing but unreadable files: the rest is good, each file is
    named; returns (path as in the catalog, archived as zeros) of each. Anything else is a failure."""
    argv = [str(a) for a in proc.args] if isinstance(proc.args, list) else [str(proc.args)]
    if code == 2:
        matches = [TAR_UNREADABLE.match(line) for line in lines if line != TAR_FAILURE_SUMMARY]
        found = [m for m in matches if m]
        if found and len(found) == len(matches):
            for m in found:
                log.error("error: %s: unreadable (%s)", m["path"].removeprefix("./"), m["why"])
            return [(m["path"].removeprefix("./"), m["what"].startswith("Read error")) for m in found]
    if code == 1:
        for line in lines:
            log.warning("warning: %s", line)
        return []
    if code != 0:
        raise CommandError(argv, code, "\n".join(lines))
    for line in lines:
        log.debug("tar: %s", line)
    return []
