"""The command line: parses, calls one function, prints. No logic of its own.

Heavy modules are imported inside each command so that `mediad --help` stays fast and never
imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from mediad import __version__, log, stopping
from mediad.errors import InvalidFile, MediadError

if TYPE_CHECKING:
    from mediad.profiles import Profile

# Signals whose default action ends the process (signal(7)), less those a fault in the code
# itself raises (SEGV, BUS, FPE, ILL, ABRT, TRAP, SYS). Python ignores SIGPIPE and SIGXFSZ: a
# closed pipe and a file-size limit are write errors (EPIPE, EFBIG) instead.
STOPPING_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
                    signal.SIGUSR2, signal.SIGALRM, signal.SIGXCPU, signal.SIGVTALRM,
                    signal.SIGPROF, signal.SIGSTKFLT, signal.SIGIO, signal.SIGPWR,
                    *range(signal.SIGRTMIN, signal.SIGRTMAX + 1))


def _signal_name(signum: int) -> str:
    """'SIGTERM'; real-time signals other than the first and last have no name of their own."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextlib.contextmanager
def _stopping_raises() -> Iterator[None]:
    """While inside, every stopping signal stops the command with Stopped: at once, or inside a
    job at its next safe point (see mediad.stopping); the command cleans up and exits."""
    def stop(signum: int, _frame: object) -> None:
        stopping.on_signal(signum)

    # Keep what the caller chose to ignore (`nohup mediad transcode ...`).
    changed = {sig: handler for sig in STOPPING_SIGNALS
               if (handler := signal.getsignal(sig)) in (signal.SIG_DFL, signal.default_int_handler)}
    stopping.reset()
    for sig in changed:
        signal.signal(sig, stop)
    try:
        yield
    finally:  # main() may run inside another program (tests): give its handlers back, and
        # forget a signal noted too late to act on (that program's next job must not stop)
        for sig, handler in changed.items():
            signal.signal(sig, handler)
        stopping.reset()


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _print_error(message: str) -> None:
    print(f"mediad: error: {message}", file=sys.stderr)


def path_arg(text: str) -> str:
    """argparse type of a file argument: an empty one (an unset variable) is a usage error."""
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    return text


def gpu_choice(text: str) -> str:
    """argparse type of --gpu: auto, none or a device number (a usage error otherwise)."""
    if text in ("auto", "none"):
        return text
    if text.isascii() and text.isdigit():
        return str(int(text))
    raise argparse.ArgumentTypeError(f"expected auto, none or a device number, not {text!r}")


def cmd_transcode(args: argparse.Namespace) -> int:
    with _start_up():
        from mediad.media.probe import probing_early
    with probing_early(Path(args.input)):  # the source's probe overlaps the imports
        return _transcode(args)


def _transcode(args: argparse.Namespace) -> int:
    with _start_up():
        from mediad.media.job import transcode
        from mediad.media.progress import progress_reporter
        from mediad.profiles import load_profile

        profile = load_profile(args.profile)
    output = Path(args.output) if args.output is not None else None
    if profile.is_ladder:
        return _transcode_ladder(args, profile, output)
    with progress_reporter(enabled=not args.no_progress) as on_progress:
        report = transcode(Path(args.input), profile, output,
                           gpu=args.gpu, overwrite=args.overwrite, on_progress=on_progress)
    if args.json:
        _print_json(report.to_dict())
    else:
        from mediad.media.report import format_report

        print(format_report(report))
    return 0


def _transcode_ladder(args: argparse.Namespace, profile: Profile, output: Path | None) -> int:
    from mediad.media.ladder_job import format_ladder_report, transcode_ladder
    from mediad.media.progress import progress_reporter

    with progress_reporter(enabled=not args.no_progress) as on_progress:
        report = transcode_ladder(Path(args.input), profile, output, gpu=args.gpu,
                                  overwrite=args.overwrite, on_progress=on_progress)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(format_ladder_report(report))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    with _start_up():
        from mediad.media.media_info import format_media_info
        from mediad.media.probe import probe

    info = probe(Path(args.input))
    if args.json:
        _print_json(info.to_dict())
    else:
        print(format_media_info(info))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    with _start_up():
        from mediad.media.probe import probing_early
    with probing_early(Path(args.input)):  # as transcode's
        return _plan(args)


def _plan(args: argparse.Namespace) -> int:
    with _start_up():
        from mediad.media.job import plan_job
        from mediad.media.job_plan import format_job_plan, single_output
        from mediad.profiles import load_profile

        profile = load_profile(args.profile)
    output = Path(args.output) if args.output is not None else None
    if profile.is_ladder:
        from mediad.media.ladder_job import plan_ladder_job

        plan = plan_ladder_job(Path(args.input), profile, output, gpu=args.gpu)
    else:
        plan = single_output(plan_job(Path(args.input), profile, output, gpu=args.gpu))
    if args.json:
        _print_json(plan.to_dict())
    else:
        print(format_job_plan(plan))
    return 0


def _validate_each(names: list[str], load: Callable[[str], object]) -> int:
    """Load every file; say `NAME: ok` or print each of its errors on a line of its own."""
    failed = False
    for name in names:
        try:
            load(name)
        except MediadError as e:
            failed = True
            for line in e.errors if isinstance(e, InvalidFile) else [str(e)]:
                _print_error(line)
        else:
            print(f"{name}: ok")
    return 1 if failed else 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from mediad import profiles

    if args.action in ("show", "validate") and not args.names:
        args.parser.error(f"name one or more profiles to {args.action}")
    if args.action in ("list", "schema") and args.names:
        args.parser.error(f"{args.action} takes no NAME")

    if args.action == "list":
        for name in profiles.builtin_names():
            print(f"{name:12} {profiles.load_profile(name).description}")
    elif args.action == "show":
        for name in args.names:
            path = profiles.resolve_profile_path(name)
            profiles.load_profile(name)  # validate before showing
            print(f"# {path}")
            print(path.read_text(encoding="utf-8"))
    elif args.action == "validate":
        return _validate_each(args.names, profiles.load_profile)
    else:  # schema
        _print_json(profiles.profile_schema())
    return 0


def cmd_gpus(args: argparse.Namespace) -> int:
    from mediad.gpu import format_gpus, gpus_report

    report = gpus_report(probe=not args.no_probe)
    if args.json:
        _print_json(report)
    else:
        print(format_gpus(report))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from mediad.models.registry import format_models, list_models

    models = list_models()
    if args.json:
        _print_json(models)
    else:
        print(format_models(models))
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    from mediad.daemon.service import run_daemon

    return run_daemon(Path(args.config))


def cmd_node(args: argparse.Namespace) -> int:
    from mediad.daemon.node import declared_for, parse_declare, ray_start_command

    declared = declared_for(args.nvenc_sessions, parse_declare(args.declare), not args.no_probe)
    command = ray_start_command(declared, address=args.address, head=args.head, port=args.port,
                                node_ip=args.node_ip_address, num_cpus=args.num_cpus,
                                extra=args.ray_args)
    for note in declared.notes:
        print(f"mediad node: {note}", file=sys.stderr)
    if args.dry_run:
        print(shlex.join(command))
        return 0
    sys.stderr.flush()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.execv(command[0], command)  # Ray itself runs on, under this process's supervisor


def cmd_status(args: argparse.Namespace) -> int:
    from mediad.daemon.status import format_status, status_report

    report = status_report(Path(args.config) if args.config else None)
    if args.json:
        _print_json(report)
    else:
        print(format_status(report))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from mediad.daemon.retry import Requeued, retry

    if args.failed and args.targets:
        args.parser.error("--failed takes every failed job: name no JOB_ID or PATH with it")
    if not args.failed and not args.targets:
        args.parser.error("name failed jobs (JOB_ID or PATH), or give --failed")
    results = retry(Path(args.config) if args.config else None, args.targets,
                    all_failed=args.failed)
    for r in results:
        if isinstance(r, Requeued):
            print(r.line(), flush=True)
            if r.warning:
                print(f"mediad: warning: {r.warning}", file=sys.stderr)
        else:
            _print_error(str(r))
    if args.failed and not results:
        print("mediad: no failed jobs", file=sys.stderr)
    return 0 if all(isinstance(r, Requeued) for r in results) else 1


def _print_command_results(results: list) -> int:
    for r in results:
        if isinstance(r, str):
            print(r, flush=True)
        else:
            _print_error(str(r))
    return 0 if all(isinstance(r, str) for r in results) else 1


def cmd_cancel(args: argparse.Namespace) -> int:
    from mediad.daemon.commands import send

    return _print_command_results(send(Path(args.config) if args.config else None, "cancel",
                                       args.jobs))


def cmd_priority(args: argparse.Namespace) -> int:
    from mediad.daemon.commands import send

    return _print_command_results(send(Path(args.config) if args.config else None, "priority",
                                       [args.job], args.value))


def cmd_api(args: argparse.Namespace) -> int:
    from mediad.api.token import read_token
    from mediad.config import default_config_path, load_config

    config = load_config(Path(args.config) if args.config else default_config_path())
    print(read_token(config.daemon.state_dir))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from mediad.config import load_config

    return _validate_each(args.files, lambda path: load_config(Path(path)))


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every mediad command."""
    p = argparse.ArgumentParser(prog="mediad", description="GPU video transcoding and media-ML service.")
    p.add_argument("--version", action="version", version=f"mediad {__version__}")
    p.add_argument("--log-level", default="WARNING",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="stderr log level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def gpu_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--gpu", default="auto", type=gpu_choice, metavar="auto|none|N",
                        help="GPU to use: auto (default), none (CPU only) or a device number")

    t = sub.add_parser("transcode", help="transcode one file now, with a progress bar")
    t.add_argument("input", type=path_arg)
    t.add_argument("-p", "--profile", default=None, help="built-in profile name or .toml path (default: h264)")
    t.add_argument("-o", "--output", default=None, help="output path (default: <stem>.<profile>.<ext> beside the input)")
    gpu_arg(t)
    t.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    t.add_argument("--json", action="store_true", help="print the job report as JSON on stdout")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_transcode)

    pr = sub.add_parser("probe", help="show what is in a media file")
    pr.add_argument("input", type=path_arg)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_probe)

    pl = sub.add_parser("plan", help="show the decisions a transcode would make, without running it")
    pl.add_argument("input", type=path_arg)
    pl.add_argument("-p", "--profile", default=None)
    pl.add_argument("-o", "--output", default=None)
    gpu_arg(pl)
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)

    pf = sub.add_parser("profiles", help="list, show, validate profiles or print their schema")
    pf.add_argument("action", choices=["list", "show", "validate", "schema"])
    pf.add_argument("names", nargs="*", metavar="NAME|PATH")
    pf.set_defaults(func=cmd_profiles, parser=pf)

    g = sub.add_parser("gpus", help="list NVIDIA GPUs, their telemetry and what they can do")
    g.add_argument("--json", action="store_true")
    g.add_argument("--no-probe", action="store_true", help="skip the NVENC/NVDEC trials")
    g.set_defaults(func=cmd_gpus)

    m = sub.add_parser("models", help="frame models")
    m.add_argument("action", choices=["list"])
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("daemon", help="watch folders and transcode what lands in them")
    d.add_argument("--config", required=True, type=path_arg, help="mediad.toml")
    d.set_defaults(func=cmd_daemon)

    s = sub.add_parser("status", help="queue counts and recent jobs from the daemon's state database")
    s.add_argument("--config", default=None, type=path_arg)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    r = sub.add_parser("retry", help="requeue failed daemon jobs (sources moved back from failed_dir)",
                       description="Requeue failed daemon jobs: move each source back from "
                       "failed_dir to its original path (never over an existing file), remove "
                       "its .error.json, reset its attempts. A running daemon starts them as "
                       "soon as a worker is free, a stopped one at its next start.")
    r.add_argument("targets", nargs="*", metavar="JOB_ID|PATH",
                   help="a job id, a job's original source path, or its file in failed_dir")
    r.add_argument("--failed", action="store_true", help="every failed job")
    r.add_argument("--config", default=None, type=path_arg, help="mediad.toml (default: $MEDIAD_CONFIG, "
                   "else /etc/mediad/mediad.toml)")
    r.set_defaults(func=cmd_retry, parser=r)

    k = sub.add_parser("cancel", help="cancel daemon jobs: a queued one never runs, a running "
                       "one is stopped (its source is left where it is)")
    k.add_argument("jobs", nargs="+", type=int, metavar="JOB_ID")
    k.add_argument("--config", default=None, type=path_arg)
    k.set_defaults(func=cmd_cancel)

    o = sub.add_parser("priority", help="reorder a queued daemon job (higher runs first)")
    o.add_argument("job", type=int, metavar="JOB_ID")
    o.add_argument("value", type=int, metavar="PRIORITY")
    o.add_argument("--config", default=None, type=path_arg)
    o.set_defaults(func=cmd_priority)

    n = sub.add_parser("node", help="join a Ray cluster as a node for the daemon's Ray executor, "
                       "declaring this machine's GPUs, NVENC sessions and NVDEC")
    n.add_argument("--address", help="the cluster head's host:port")
    n.add_argument("--head", action="store_true", help="start a new cluster's head here")
    n.add_argument("--port", type=int, default=6379, help="the head's port (with --head)")
    n.add_argument("--node-ip-address", help="this node's address as the others reach it")
    n.add_argument("--num-cpus", type=int, help="CPUs to offer (default: all)")
    n.add_argument("--nvenc-sessions", type=int, default=3, metavar="N",
                   help="NVENC sessions per GPU to declare (as daemon.nvenc_sessions; default 3)")
    n.add_argument("--declare", action="append", default=[], metavar="NAME=AMOUNT",
                   help="declare a resource by hand, over the probe's (e.g. nvenc_h264=2, GPU=1)")
    n.add_argument("--no-probe", action="store_true", help="do not try the GPUs (declare none)")
    n.add_argument("--dry-run", action="store_true", help="print the ray start command and exit")
    n.add_argument("ray_args", nargs="*", metavar="-- RAY_ARG",
                   help="further `ray start` options, after --")
    n.set_defaults(func=cmd_node)

    a = sub.add_parser("api", help="the daemon's REST API (docs/api.md)")
    a.add_argument("action", choices=["token"], help="token: print the bearer token")
    a.add_argument("--config", default=None, type=path_arg, help="mediad.toml (default: "
                   "$MEDIAD_CONFIG, else /etc/mediad/mediad.toml)")
    a.set_defaults(func=cmd_api)

    c = sub.add_parser("config", help="daemon configuration")
    c.add_argument("action", choices=["validate"])
    c.add_argument("files", nargs="+", metavar="FILE", type=path_arg)
    c.set_defaults(func=cmd_config)
    return p


def _failed(args: argparse.Namespace, message: str, reason: str, line: str) -> None:
    """Say why the command failed: `line` on stderr and, with --json, the error as JSON."""
    # Best effort: after a hangup (SIGHUP) the terminal is gone and writing to it fails.
    if getattr(args, "json", False):
        with contextlib.suppress(OSError):
            _print_json({"error": message, "reason": reason, "file": getattr(args, "input", None)})
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr)


# One-shot commands whose process run() ends without the interpreter's teardown: freeing the
# av/pydantic module graph took ~35 ms after a transcode's work was done and committed.
_FAST_EXIT_COMMANDS = frozenset({"transcode", "probe", "plan"})
_fast_exit = False
# Set by run(): this process is the `mediad` program, not a caller of main() (tests, scripts).
_program = False


@contextlib.contextmanager
def _start_up() -> Iterator[None]:
    """Around a one-shot command's imports and profile: no cyclic garbage collection, and what
    they built frozen out of the collector's reach afterwards (the program only).

    Start-up builds the modules, classes and pydantic validators that live as long as the
    process, and next to no garbage; the collector went through them 60 times, ~11 ms of every
    transcode, for nothing. Frozen, they are never scanned again (the run's own garbage still
    is). A caller of main() keeps its collector as it was.
    """
    if not (_program and _fast_exit and gc.isenabled()):
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


# The daemon cannot start and a restart would not mend it: its config, or its state database.
EX_CONFIG = 78
_DAEMON_CONFIG_REASONS = frozenset({"bad_config", "bad_state"})


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mediad` command."""
    global _fast_exit
    args = build_parser().parse_args(argv)
    _fast_exit = args.command in _FAST_EXIT_COMMANDS
    log.setup(args.log_level)
    # The daemon handles its signals itself; a one-shot command must not die with a .part file.
    with contextlib.nullcontext() if args.command == "daemon" else _stopping_raises():
        try:
            code = args.func(args)
            if (signum := stopping.noted()) is not None:  # the job was past its last safe point
                print(f"mediad: {_signal_name(signum)} came as the job ended: its output is "
                      "complete", file=sys.stderr)
            return code
        except MediadError as e:
            _failed(args, str(e), e.reason, f"mediad: error: {e}")
            if args.command == "daemon" and e.reason in _DAEMON_CONFIG_REASONS:
                return EX_CONFIG  # the unit's RestartPreventExitStatus: no restart loop
            return 1
        except BrokenPipeError:  # e.g. `mediad probe --json | head`
            return 0
        except (KeyboardInterrupt, stopping.Stopped) as e:
            signum = e.signum if isinstance(e, stopping.Stopped) else signal.SIGINT
            message = f"interrupted by {_signal_name(signum)}"
            _failed(args, message, "interrupted", f"mediad: {message}")
            return 128 + signum


def run() -> NoReturn:
    """The `mediad` program (console script and `python -m mediad`): main(), then exit."""
    # pydantic looks for plugins in every installed package's metadata when the first model
    # is built (20+ ms of each command); the mediad program has none. A library user keeps
    # theirs: this is the program's entry, not the package's import.
    global _program
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    _program = True
    code = main()
    if _fast_exit:  # output flushed and committed: nothing left that teardown would do
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # e.g. a closed pipe
                stream.flush()
        os._exit(code)
    sys.exit(code)
