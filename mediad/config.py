"""The daemon's configuration: pydantic models of mediad.toml, loaded and validated in one place."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mediad.errors import InvalidFile, MediadError, Reason
from mediad.fsutil import read_toml_text
from mediad.profiles import Profile, load_profile, validation_errors

DEFAULT_CONFIG = Path("/etc/mediad/mediad.toml")
DEFAULT_LISTEN = "127.0.0.1:9464"
DEFAULT_API_LISTEN = "127.0.0.1:8464"
_LOADED_PROFILES = "mediad_loaded_profiles"  # validation-context key: spec -> Profile


def default_config_path() -> Path:
    """The config file used when none is given: $MEDIAD_CONFIG, else /etc/mediad/mediad.toml."""
    return Path(os.environ.get("MEDIAD_CONFIG") or DEFAULT_CONFIG)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(value: Path | str, info: ValidationInfo) -> Path:
    # Relative paths are taken from the config file's folder, so a config means one thing
    # whatever the daemon's working directory.
    base = (info.context or {}).get("base", Path.cwd())
    return Path(os.path.normpath(Path(base) / Path(value).expanduser()))


def _not_empty(value: object) -> object:
    # An empty path would silently mean the config's own folder (/etc/mediad): surely a slip.
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


ConfigPath = Annotated[Path, BeforeValidator(_not_empty), AfterValidator(_resolve)]


class DaemonSettings(_Strict):
    state_dir: ConfigPath = Path("/var/lib/mediad")
    workers: int = Field(default=2, ge=1, le=64)
    # NVENC sessions allowed at once on each GPU (consumer cards cap them); 0: never use NVENC.
    nvenc_sessions: int = Field(default=3, ge=0, le=64)
    # What a job whose profile may use NVENC does when every GPU's budget is in use:
    # "cpu" runs it now with gpu="none", "wait" keeps it queued until a session frees up.
    nvenc_overflow: Literal["cpu", "wait"] = "cpu"
    settle_seconds: float = Field(default=5.0, ge=0.0, le=3600.0)
    max_attempts: int = Field(default=3, ge=1, le=100)
    retry_backoff_seconds: float = Field(default=30.0, ge=0.0, le=86400.0)
    stall_timeout_seconds: float = Field(default=300.0, gt=0.0)
    stop_grace_seconds: float = Field(default=30.0, ge=0.0, le=3600.0)
    rescan_seconds: float = Field(default=300.0, gt=0.0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class WatchConfig(_Strict):
    path: ConfigPath
    profile: str = "h264"
    output_dir: ConfigPath
    recursive: bool = False
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    polling: bool = False
    poll_interval_seconds: float = Field(default=2.0, gt=0.0, le=3600.0)
    on_success: Literal["keep", "move", "delete"] = "keep"
    done_dir: ConfigPath | None = None
    failed_dir: ConfigPath | None = None
    # A file with a second name (st_nlink > 1) may be a hard link to a file outside the folder:
    # refused unless the folder's files are known to be hard-linked on purpose (a seedbox).
    allow_hard_links: bool = False

    _profile: Profile | None = PrivateAttr(default=None)

    @field_validator("profile")
    @classmethod
    def _profile_spec(cls, v: str, info: ValidationInfo) -> str:
        if v.endswith(".toml") or "/" in v:
            v = str(_resolve(v, info))
        try:
            profile = load_profile(v)
        except MediadError as e:
            raise ValueError(str(e)) from None
        if profile.is_ladder and "%" in profile.output_suffix:
            raise ValueError(f"profile {profile.name}: a ladder's folder is named after its "
                             "profile, and FFmpeg's segmenters read a '%' in a path as a pattern")
        # Handed on to model_post_init through the validation context: read and validated once.
        if isinstance(info.context, dict):
            info.context.setdefault(_LOADED_PROFILES, {})[v] = profile
        return v

    def model_post_init(self, context: object) -> None:
        loaded = context.get(_LOADED_PROFILES, {}) if isinstance(context, dict) else {}
        # Not there: validated without a context, or the default profile (validators skip defaults).
        self._profile = loaded.get(self.profile) or load_profile(self.profile)

    @property
    def loaded_profile(self) -> Profile:
        """The profile as loaded (and validated) when this config was read."""
        assert self._profile is not None
        return self._profile


class _Listener(_Strict):
    """A `listen = "host:port"` key; "" turns the listener off."""

    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if v:
            parse_listen(v)
        return v

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None when it is off."""
        return parse_listen(self.listen) if self.listen else None


class MetricsConfig(_Listener):
    # host:port of the Prometheus endpoint; "" turns it off. Loopback unless you open it on purpose.
    listen: str = DEFAULT_LISTEN


class ApiConfig(_Listener):
    # host:port of the REST API (docs/api.md); "" (or no [api] section) turns it off. Keep it
    # on loopback: put a reverse proxy with TLS in front to reach it from elsewhere.
    listen: str = ""


class PathMap(_Strict):
    """Where some cluster nodes mount the shared media storage the head sees at `head`."""

    head: Path  # a folder as the daemon (the head) sees it
    node: Path  # the same folder on those nodes
    nodes: tuple[str, ...] = ()  # node addresses (as Ray knows them); empty: every node

    @field_validator("head", "node")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path (it is a path on another machine)")
        return Path(os.path.normpath(value))


class ExecutorConfig(_Strict):
    # Where jobs run: "local", warm worker processes on this machine; "ray", the nodes of a
    # running Ray cluster (docs/cluster.md), which read and write the shared media storage
    kind: Literal["local", "ray"] = "local"
    # Idle worker processes kept ready, the engine imported (each ~60-100 MB; local only)
    warm_workers: int = Field(default=1, ge=0, le=16)
    # ray: the cluster's address (host:port of its head's GCS); "auto" finds one on this machine
    address: str | None = None
    # ray: CPUs a job that encodes in software asks of its node (a node runs as many at once
    # as it declared CPUs for); a job that holds an NVENC session asks for none
    software_cpus: float = Field(default=1.0, gt=0.0, le=256.0)
    # ray: the share of a GPU a job with model stages asks for (when the cluster has GPUs)
    model_gpu_share: float = Field(default=0.5, gt=0.0, le=1.0)
    path_map: tuple[PathMap, ...] = ()

    @model_validator(mode="after")
    def _ray_needs_address(self) -> ExecutorConfig:
        if self.kind == "ray" and not self.address:
            raise ValueError('address: needed when kind = "ray" (the cluster head\'s host:port)')
        return self


class Config(_Strict):
    """A validated mediad.toml."""

    daemon: DaemonSettings = DaemonSettings()
    watch: tuple[WatchConfig, ...] = Field(min_length=1)
    metrics: MetricsConfig = MetricsConfig()
    executor: ExecutorConfig = ExecutorConfig()
    api: ApiConfig = ApiConfig()

    @model_validator(mode="after")
    def _cross(self) -> Config:
        # Messages start with their key path: a model-level error has no location of its own.
        seen: set[str] = set()
        for i, w in enumerate(self.watch):
            real = os.path.realpath(w.path)  # one folder reached through a symlink is one folder
            if real in seen:
                raise ValueError(f"watch.{i}.path: {w.path} is already watched")
            seen.add(real)
            if w.on_success == "move" and w.done_dir is None:
                raise ValueError(f'watch.{i}.done_dir: needed when on_success = "move"')
            for name in ("output_dir", "done_dir", "failed_dir"):
                target = getattr(w, name)
                for other in self.watch:
                    # Anything written into a watched folder would come back as new input: a loop.
                    if target is not None and _inside(target, other.path, other.recursive):
                        raise ValueError(f"watch.{i}.{name}: {target} is inside the watched "
                                         f"folder {other.path}")
            if w.loaded_profile.is_ladder and "%" in str(w.output_dir):
                raise ValueError(f"watch.{i}.output_dir: {w.output_dir}: a ladder's folders "
                                 "go here, and FFmpeg's segmenters read a '%' in a path as a "
                                 "pattern")
            if _inside(self.daemon.state_dir, w.path, w.recursive):
                raise ValueError(f"daemon.state_dir: {self.daemon.state_dir} is inside the "
                                 f"watched folder {w.path}")
        return self


def _inside(target: Path, folder: Path, recursive: bool) -> bool:
    """True when files written in `target` would be seen by a watch on `folder`."""
    # Compared as the folders really are: an output_dir that is a symlink to the watched folder
    # (or lies under one) is the watched folder. Parts that do not exist yet stay as written.
    real_target, real_folder = Path(os.path.realpath(target)), Path(os.path.realpath(folder))
    if real_target == real_folder:
        return True
    return recursive and real_target.is_relative_to(real_folder)


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9464' or '[::1]:9464' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {text!r}")
    host = host.removeprefix("[").removesuffix("]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port must be 1..65535, got {port!r}")
    return host, int(port)


def parse_config(text: str, source: str, base: Path) -> Config:
    """Validate TOML text as a daemon config; relative paths are taken from `base`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MediadError(f"{source}: not valid TOML: {e}", reason=Reason.BAD_CONFIG) from None
    try:
        return Config.model_validate(data, context={"base": base})
    except ValidationError as e:
        raise InvalidFile(validation_errors(e, source), reason=Reason.BAD_CONFIG) from None


def load_config(path: Path) -> Config:
    """Load and validate a daemon config file; errors read 'FILE: key.path: reason'."""
    text = read_toml_text(path, str(path), "config", "bad_config")
    return parse_config(text, str(path), path.resolve().parent)
