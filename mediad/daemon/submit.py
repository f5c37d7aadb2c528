"""A file submitted by name (the API's POST /api/v1/jobs): the checks, shared by the API (to
answer at once) and the daemon's loop (which applies the submit command, and checks again: the
config may have been reloaded meanwhile). Pure: no store, no web stack."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mediad.config import Config, WatchConfig
from mediad.daemon.paths import refusal, relative_to_watch
from mediad.errors import MediadError, Reason
from mediad.profiles import Profile, builtin_names, load_profile

# Refusals that are about where a path points (the API answers 403), not about the request's form
FORBIDDEN = frozenset({Reason.OUTSIDE_WATCH, Reason.SYMLINK, Reason.HARD_LINK})


@dataclass(frozen=True)
class Submission:
    """A checked submit: the watch the file is under (its output_dir as asked), the file, and
    the profile (its spec as the job records it: a built-in name, or the watch's file)."""

    index: int
    watch: WatchConfig
    path: Path
    profile_spec: str
    profile: Profile


def profile_specs(config: Config) -> dict[str, str]:
    """Profiles a submit may name: the configured ones (a watch's, by its name) and the
    built-in ones; name -> spec (what load_profile takes)."""
    specs = {name: name for name in builtin_names()}
    for w in config.watch:
        specs[w.loaded_profile.name or w.profile] = w.profile
    return specs


def load_named_profile(config: Config, name: str) -> tuple[str, Profile]:
    """(spec, profile) of a profile a submit may name; MediadError (bad_profile) otherwise.
    Never a path: a client names profiles, it does not point at files."""
    specs = profile_specs(config)
    if name not in specs:
        raise MediadError(f"unknown profile {name!r}: the profiles are {', '.join(sorted(specs))}",
                          reason=Reason.BAD_PROFILE)
    spec = specs[name]
    return spec, profile_of(config, spec)


def profile_of(config: Config, spec: str,
               load: Callable[[str], Profile] = load_profile) -> Profile:
    """A configured profile as the config loaded it (what the daemon runs until a reload),
    any other as `load` reads its file now."""
    loaded = next((w.loaded_profile for w in config.watch if w.profile == spec), None)
    return loaded or load(spec)


def _absolute(text: str, what: str) -> Path:
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        raise MediadError(f"{what}: not a file name (a lone surrogate)",
                          reason=Reason.BAD_REQUEST) from None
    if "\0" in text or not text.strip():
        raise MediadError(f"{what} {text!r}: not a path", reason=Reason.BAD_REQUEST)
    if not text.startswith("/"):
        raise MediadError(f"{what} {text}: must be an absolute path", reason=Reason.BAD_REQUEST)
    return Path(os.path.normpath(text))


def check_submission(config: Config, path: str, profile: str,
                     output_dir: str | None = None) -> Submission:
    """Check a submit against the config and the file system; MediadError with its reason
    (outside_watch, symlink, hard_link: not allowed; missing_input, bad_profile, ...) if not."""
    source = _absolute(path, "path")
    index = next((i for i, w in enumerate(config.watch)
                  if relative_to_watch(w, source) is not None), None)
    if index is None:
        raise MediadError(f"{source}: not under a watched folder "
                          f"({', '.join(str(w.path) for w in config.watch)})",
                          reason=Reason.OUTSIDE_WATCH)
    watch = config.watch[index]
    why = refusal(watch, source)
    if why == "vanished":
        raise MediadError(f"{source}: no such file", reason=Reason.MISSING_INPUT)
    if why:
        raise MediadError(f"{source}: refused ({why})", reason=why)
    spec, loaded = load_named_profile(config, profile)
    out = watch.output_dir
    if output_dir is not None:
        out = _absolute(output_dir, "output_dir")
        real = Path(os.path.realpath(out))
        if not any(real.is_relative_to(os.path.realpath(w.output_dir)) for w in config.watch):
            raise MediadError(f"output_dir {out}: not inside a configured output_dir "
                              f"({', '.join(str(w.output_dir) for w in config.watch)})",
                              reason=Reason.OUTSIDE_WATCH)
        if any(real.is_relative_to(os.path.realpath(w.path)) for w in config.watch):
            raise MediadError(f"output_dir {out}: inside a watched folder (its outputs would "
                              "come back as input)", reason=Reason.OUTSIDE_WATCH)
        if loaded.is_ladder and "%" in str(out):
            raise MediadError(f"output_dir {out}: a ladder's folders go here, and FFmpeg's "
                              "segmenters read a '%' in a path as a pattern",
                              reason=Reason.BAD_REQUEST)
        watch = watch.model_copy(update={"output_dir": out})
    return Submission(index, watch, source, spec, loaded)
