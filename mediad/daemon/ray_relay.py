"""The node side of the Ray executor: a Ray task that runs one job in a worker process on the
node it was placed on (the same `python -m mediad.daemon.worker` the local executor runs) and
streams the worker's event lines back to the daemon, one generator item each.

Video never goes through Ray: the worker reads and writes the shared storage, at the node's
paths (path_map). The worker dies with this task (PR_SET_PDEATHSIG), so a task Ray ends for a
cancel, a lost owner (the daemon gone) or a force-cancel takes its worker along; whatever
temporary output a killed worker leaves is removed here, where its writer's pid means
something, or by the daemon once the job is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from mediad.config import PathMap
from mediad.daemon.partial import remove_partials
from mediad.daemon.path_map import report_for_head, spec_for_node
from mediad.daemon.pool import start_worker_process
from mediad.daemon.protocol import Done, JobSpec, Started, read_event

EXIT = "exit"  # the relay's own last item: how the worker process ended
TERM_GRACE = 10.0  # seconds a worker has to clean up after SIGTERM


def _node_address() -> str:
    import ray

    return ray.util.get_node_ip_address()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the worker's group (it removes its temporary output), SIGKILL if it lingers."""
    for signum, wait in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, 30.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)


def relay(spec_line: str, maps: Sequence[PathMap]) -> Iterator[str]:
    """Run the job on this node; yield its event lines (paths as the head sees them), then an
    `exit` line with the worker's exit status."""
    node = _node_address()
    spec = spec_for_node(JobSpec.model_validate(json.loads(spec_line)), maps, node)
    proc = start_worker_process()
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(spec.line().encode() + b"\n")
        proc.stdin.close()  # one job: the worker exits after it
        for raw in proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            event = read_event(msg)
            if isinstance(event, Started):
                msg["node"] = node
            elif isinstance(event, Done):
                msg["report"] = report_for_head(msg["report"], maps, node)
            yield json.dumps(msg)
        yield json.dumps({"event": EXIT, "code": proc.wait()})
    finally:  # also on a cancel (KeyboardInterrupt) or when the daemon stopped listening
        _stop(proc)
        proc.stdout.close()
        remove_partials(Path(spec.output))
