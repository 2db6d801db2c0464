"""Mode restic, the backup: each file system into the repository as its own snapshot (`restic
backup --one-file-system` from its mount point, images through --stdin), then the run's
etc/recovery, manifest and file system tops as one more snapshot, so a set is whole inside the
repository. `restic forget --prune` with [restic] keep runs only after all of that worked."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import IO, Any

from mkrec.backup.imaging import open_image
from mkrec.backup.manifest import Manifest, StreamRecord
from mkrec.backup.run import StderrDrain, used_bytes_of
from mkrec.backup.sources import Source, backup_sources, split_excludes
from mkrec.backup.stream import widen_pipe
from mkrec.backup.volumes import RECOVERY_IN_SET, SetInfo, recovery_files
from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.layout.model import Layout
from mkrec.log import step
from mkrec.progress import Progress
from mkrec.restic import tags
from mkrec.restic.repo import Repo
from mkrec.sizes import format_size

log = logging.getLogger("mkrec.backup")

MANIFEST = "backup/manifest.json"
TOPS = "backup/tops.json"  # mode, owner and times of each file system's top directory
CHUNK = 1 << 20
PARTIAL = 3  # restic backup: a snapshot was made, but some files could not be read


def backup_to_restic(ctx: Context, layout: Layout | None) -> str:
    """Every file system of the layout into the repository; returns the set's name."""
    cfg = ctx.config
    repo = Repo.from_config(cfg)
    with step(f"Checking the restic repository {repo.location}"):
        repo.check_ready()
    info = SetInfo(
        str(uuid.uuid4()),
        ctx.set_name,
        ctx.hostname,
        ctx.started.isoformat(timespec="seconds"),
        str(cfg.build.mode),
    )
    local = repo.local_path()  # a repository on a backed-up file system is not backed up into itself
    never = [cfg.build.output, ctx.staging] + ([local.resolve()] if local else [])
    run_tags = tags.run_tags(info.set_name, info.set_id, cfg.restic.tags)
    records, tops = [], {}
    for src in backup_sources(ctx, never, layout):
        with step(f"Backing up {src.mountpoint or src.device} ({src.device}, {src.fstype}) into restic"):
            records.append(backup_filesystem(ctx, repo, src, run_tags, never))
        if src.kind == "tar":
            tops[records[-1].name] = top_metadata(src.path)
    with step("Storing etc/recovery and the manifest in the repository"):
        store_recovery(ctx, repo, info, records, tops, run_tags)
    forget(ctx, repo)
    log.info("Backup set %s: %d snapshot(s) in %s", info.set_name, len(records) + 1, repo.location)
    return info.set_name


def stream_name(src: Source) -> str:
    """The file system's name in the set (restic compresses and stores it its own way: no .zst)."""
    return src.stream.removesuffix(".zst")


def backup_filesystem(
    ctx: Context, repo: Repo, src: Source, run_tags: list[str], never: list[Path]
) -> StreamRecord:
    name = stream_name(src)
    record = StreamRecord(
        name=name,
        kind=src.kind,
        device=src.device,
        fstype=src.fstype,
        mountpoint=src.mountpoint,
        frame_size=0,
    )
    tag_arg = ["--tag", ",".join([*run_tags, tags.FS + name]), "--host", ctx.hostname]
    progress = Progress(src.mountpoint or src.device, used_bytes_of(src))
    if src.kind == "tar":
        argv = [
            "backup",
            "--one-file-system",
            *tag_arg,
            *restic_excludes(src, ctx.config.source.exclude, never),
            ".",
        ]
        summary = snapshot(repo, argv, src.path, None, progress)
    else:
        image = open_image(src.device, src.fstype)
        record.image, record.fs_size = image.format, image.info.fs_size
        progress.total = image.info.used
        argv = ["backup", "--stdin", "--stdin-filename", name, *tag_arg]
        try:
            summary = snapshot(repo, argv, Path("/"), image.reader, progress)
        except BaseException:
            image.kill()
            raise
        image.finish()
    record.complete = True
    record.size = int(summary.get("total_bytes_processed", 0))
    progress.update(record.size)
    progress.finish()
    record.compressed_size = int(summary.get("data_added", 0))
    log.info(
        "    %s: snapshot %s, %d files, %s read, %s added to the repository",
        name,
        summary.get("snapshot_id", "?"),
        summary.get("total_files_processed", 0),
        format_size(record.size),
        format_size(record.compressed_size),
    )
    return record


def restic_excludes(src: Source, excludes: tuple[str, ...], never: list[Path]) -> list[str]:
    """restic matches an absolute pattern against the absolute path it reads: anchor at the mount."""
    anchored, floating = split_excludes(src, excludes, never)
    top = str(src.path).rstrip("/")
    return [f"--exclude={top}{p[1:]}" for p in anchored] + [f"--exclude={p}" for p in floating]


class JsonLines(threading.Thread):
    """Reads restic's --json stdout while it works: status lines move the progress, the summary
    line is kept."""

    def __init__(self, stream: IO[bytes], progress: Progress) -> None:
        super().__init__(daemon=True)
        self.stream, self.progress = stream, progress
        self.summary: dict[str, Any] = {}

    def run(self) -> None:
        for raw in self.stream:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if msg.get("message_type") == "status":
                self.progress.update(int(msg.get("bytes_done", 0)))
            elif msg.get("message_type") == "summary":
                self.summary = msg


def snapshot(
    repo: Repo, args: list[str], cwd: Path, feed: IO[bytes] | None, progress: Progress
) -> dict[str, Any]:
    """restic ARGS --json in cwd (feed: what --stdin reads); its summary. Files restic could not read
    are warnings (the snapshot is made, as tar's exit 1 in the other modes); any other failure is one line."""
    proc = repo.popen(*args, "--json", stdin=subprocess.PIPE if feed else subprocess.DEVNULL, cwd=cwd)
    assert proc.stdout is not None and proc.stderr is not None
    lines, drain = JsonLines(proc.stdout, progress), StderrDrain(proc.stderr)  # type: ignore[arg-type]
    lines.start()
    drain.start()
    try:
        if feed is not None:
            assert proc.stdin is not None
            widen_pipe(proc.stdin.fileno())
            while chunk := feed.read(CHUNK):
                proc.stdin.write(chunk)
            proc.stdin.close()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    code = proc.wait()
    lines.join()
    drain.join()
    if code == PARTIAL:
        for line in drain.lines:
            log.warning("warning: restic: %s", line)
    elif code != 0:
        raise repo.failed(args, code, "\n".join(drain.lines))
    return lines.summary


def top_metadata(path: Path) -> dict[str, int]:
    """What a snapshot of "." does not keep: the file system's top directory itself."""
    st = os.stat(path)
    return {
        "mode": st.st_mode & 0o7777,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "atime_ns": st.st_atime_ns,
        "mtime_ns": st.st_mtime_ns,
    }


def store_recovery(
    ctx: Context,
    repo: Repo,
    info: SetInfo,
    records: list[StreamRecord],
    tops: dict[str, dict[str, int]],
    run_tags: list[str],
) -> None:
    """etc/recovery, the manifest and the tops as one snapshot. Its directory keeps the same path from
    run to run: restic forget groups snapshots by host and path."""
    tree = ctx.staging / "restic-set"
    shutil.rmtree(tree, ignore_errors=True)
    for src in recovery_files(ctx.recovery_dir):
        dest = tree / RECOVERY_IN_SET / src.relative_to(ctx.recovery_dir)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(src, dest)
    manifest = Manifest(
        info.set_id,
        info.set_name,
        info.host,
        info.date,
        info.mode,
        volume=1,
        volumes=1,
        streams=records,
        catalog="",
    )
    (tree / "backup").mkdir(parents=True, mode=0o700)
    (tree / MANIFEST).write_text(manifest.to_json())
    (tree / TOPS).write_text(json.dumps(tops, indent=1) + "\n")
    tag_arg = ",".join([*run_tags, tags.RECOVERY])
    try:
        snapshot(
            repo,
            ["backup", "--tag", tag_arg, "--host", ctx.hostname, "."],
            tree,
            None,
            Progress("etc/recovery"),
        )
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def keep_args(rules: tuple[str, ...]) -> list[str]:
    """[restic] keep ("daily=7") as restic forget options (--keep-daily 7)."""
    out = []
    for rule in rules:
        name, _sep, value = rule.partition("=")
        out += [f"--keep-{name}", value]
    return out


def forget(ctx: Context, repo: Repo) -> None:
    """The keep policy, for this host's mkrec snapshots only; run after a whole good backup."""
    keep = ctx.config.restic.keep
    if not keep:
        return
    with step(f"Forgetting old snapshots ({', '.join(keep)}) and pruning"):
        try:
            repo.run("forget", "--prune", "--host", ctx.hostname, "--tag", tags.TAG, *keep_args(keep))
        except MkrecError as err:
            raise MkrecError(f"the backup is stored, but {err.message}", hint=err.hint) from None
