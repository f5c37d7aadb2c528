"""Paths between the head and cluster nodes that mount the shared media storage elsewhere
([[executor.path_map]]): a job spec is rewritten for the node that runs it, and what the job
reports is rewritten back, so the daemon's store only ever holds the head's paths."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from mediad.config import PathMap
from mediad.daemon.protocol import JobSpec


def _applies(entry: PathMap, node: str) -> bool:
    return not entry.nodes or node in entry.nodes


def _swap(path: str, old: PurePosixPath, new: PurePosixPath) -> str | None:
    p = PurePosixPath(path)
    if p == old or old in p.parents:
        return str(new / p.relative_to(old))
    return None


def _map(path: str, maps: Sequence[PathMap], node: str, to_node: bool) -> str:
    # The longest prefix wins: /srv/media/archive may be mounted apart from /srv/media.
    best: tuple[int, str] | None = None
    for entry in maps:
        if not _applies(entry, node):
            continue
        old, new = (entry.head, entry.node) if to_node else (entry.node, entry.head)
        swapped = _swap(path, PurePosixPath(old), PurePosixPath(new))
        if swapped is not None and (best is None or len(str(old)) > best[0]):
            best = (len(str(old)), swapped)
    return best[1] if best else path


def to_node(path: str, maps: Sequence[PathMap], node: str) -> str:
    """The head's `path` as `node` sees it."""
    return _map(path, maps, node, to_node=True)


def to_head(path: str, maps: Sequence[PathMap], node: str) -> str:
    """`node`'s `path` as the head sees it."""
    return _map(path, maps, node, to_node=False)


def spec_for_node(spec: JobSpec, maps: Sequence[PathMap], node: str) -> JobSpec:
    """The job spec with its paths (input, output, the watched folder) as `node` sees them."""
    update: dict[str, Any] = {"input": to_node(spec.input, maps, node),
                              "output": to_node(spec.output, maps, node)}
    if spec.source is not None:
        update["source"] = spec.source.model_copy(
            update={"watch": to_node(spec.source.watch, maps, node)})
    return spec.model_copy(update=update)


def report_for_head(value: Any, maps: Sequence[PathMap], node: str) -> Any:
    """A job's report with every path in it as the head sees it (any string that is an absolute
    path under a mapped folder of the node; the rest as it was)."""
    if isinstance(value, str):
        return to_head(value, maps, node) if value.startswith("/") else value
    if isinstance(value, dict):
        return {k: report_for_head(v, maps, node) for k, v in value.items()}
    if isinstance(value, list):
        return [report_for_head(v, maps, node) for v in value]
    return value
