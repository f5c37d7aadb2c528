"""A real Ray cluster on this one machine, for the cluster tests and bench/cluster.py: a head and
worker nodes, each in a network namespace of its own, joined by veth pairs to a bridge that
lives in a further namespace, so all traffic stays inside namespaces made here (10.77.x.0/24,
never an address outside them).

Every process is started here with its own process group and ended by that group: never
`ray stop`, which ends Ray processes by name (other people's too).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def can_make_namespaces() -> str | None:
    """Why namespaces cannot be made here (not root, no iproute2); None when they can."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    try:
        name = f"mdprobe{secrets.token_hex(3)}"
        _ip("netns", "add", name)
        _ip("netns", "del", name)
    except (OSError, subprocess.CalledProcessError) as e:
        return f"cannot make a network namespace: {e}"
    return None


def session_members(sid: int) -> list[int]:
    """Pids of the processes in session `sid` (the session leader's pid) that are alive."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[3]) == sid and fields[0] != "Z":  # field 6 of stat: the session id
            pids.append(int(entry))
    return pids


@dataclass
class Node:
    """One Ray node: its namespace, address, and the process group of its `ray start --block`."""

    name: str
    netns: str
    address: str
    proc: subprocess.Popen | None = None
    log: Path | None = None

    def run_prefix(self) -> list[str]:
        """Run a command inside this node's namespace."""
        return ["ip", "netns", "exec", self.netns]

    def kill(self) -> None:
        """End every process of this node, as a lost machine: SIGKILL to each process group
        of the session its start made (Ray's workers make groups of their own in it)."""
        if self.proc is None:
            return
        for pid in session_members(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.proc.wait(30)


@dataclass
class Cluster:
    """The namespaces, the bridge and the Ray nodes; `close` removes all of them."""

    root: Path
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    nodes: list[Node] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    port: int = 6379

    @property
    def switch(self) -> str:
        return f"mdsw{self.tag}"

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def address(self) -> str:
        return f"{self.head.address}:{self.port}"

    def _namespace(self, name: str) -> str:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def make_network(self, count: int) -> None:
        """`count` node namespaces (the first is the head's) on one bridge."""
        sw = self._namespace(self.switch)
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "link", "set", "br0", "up")
        for i in range(count):
            ns = self._namespace(f"md{self.tag}n{i}")
            # Both ends are made inside the switch namespace, then one end moves to the node's.
            _ip("-n", sw, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0")
            _ip("-n", sw, "link", "set", "eth0", "netns", ns)
            _ip("-n", sw, "link", "set", f"p{i}", "master", "br0")
            _ip("-n", sw, "link", "set", f"p{i}", "up")
            address = f"10.77.{int(self.tag, 16) % 200}.{i + 1}"
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            self.nodes.append(Node(name="head" if i == 0 else f"node{i}", netns=ns, address=address))

    @property
    def token_path(self) -> Path:
        """This cluster's authentication token (Ray >= 2.5x authenticates every connection):
        given to every node and driver, so nothing reads or writes ~/.ray/auth_token, which
        another cluster on this machine would share."""
        path = self.root / "auth_token"
        if not path.exists():
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path

    def env(self) -> dict[str, str]:
        """The environment every Ray process here runs with."""
        env = dict(os.environ)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        env.update(RAY_USAGE_STATS_ENABLED="0", PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
                   PYTHONPATH=str(REPO),
                   # A cold `import ray` on a loaded machine can take a minute or more.
                   RAY_raylet_start_wait_time_s="300", RAY_agent_register_timeout_ms="300000",
                   RAY_gcs_rpc_server_reconnect_timeout_s="60")
        return env

    def start_node(self, node: Node, command: list[str]) -> None:
        """Start `command` (a blocking `ray start` or `mediad node`) in the node's namespace."""
        node.log = self.root / f"{node.name}.log"
        with open(node.log, "ab") as out:
            node.proc = subprocess.Popen(node.run_prefix() + command, stdout=out, stderr=out,
                                         env=self.env(), start_new_session=True)

    def mediad_node(self, node: Node, *args: str, mounts: str = "", num_cpus: int = 1) -> None:
        """Start the node with `mediad node` (the head first: it starts the cluster). `mounts`:
        shell commands run first inside the node's own mount namespace (a path-mapped node)."""
        role = ["--head", f"--port={self.port}"] if node is self.head else [f"--address={self.address}"]
        command = [sys.executable, "-m", "mediad", "node", *role, f"--node-ip-address={node.address}",
                   f"--num-cpus={num_cpus}", "--no-probe", *args, "--",
                   "--object-store-memory=80000000",
                   # Nodes on one machine would share one session folder and clash on its
                   # socket names: a folder of their own each.
                   f"--temp-dir={self.ray_dir(node)}"]
        if mounts:  # `ip netns exec` gives the node a mount namespace of its own
            command = ["sh", "-c", f"{mounts} && exec {shlex.join(command)}"]
        self.start_node(node, command)

    def ray_dir(self, node: Node) -> Path:
        """The node's Ray folder: short, as its sockets' paths must fit in 107 bytes."""
        return Path(f"/tmp/mdray-{self.tag}-{node.name}")

    def python(self, node: Node, code: str, timeout: float = 240) -> str:
        """Run Python code inside a node's namespace (as a driver), returning its stdout."""
        done = subprocess.run(node.run_prefix() + [sys.executable, "-c", code], env=self.env(),
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"driver failed: {done.stderr[-3000:]}")
        return done.stdout

    def wait_nodes(self, count: int, timeout: float = 300) -> list[dict]:
        """Wait until `count` nodes are alive in the cluster; their ray.nodes() records."""
        code = ("import ray, json\n"
                f"ray.init(address='{self.address}', log_to_driver=False)\n"
                "print(json.dumps([n for n in ray.nodes() if n['Alive']]))\n")
        deadline = time.time() + timeout
        alive: list[dict] = []
        while time.time() < deadline:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    tail = node.log.read_text(errors="replace")[-3000:] if node.log else ""
                    raise RuntimeError(f"{node.name} exited {node.proc.returncode}:\n{tail}")
            try:
                alive = json.loads(self.python(self.head, code, timeout=90))
            except (RuntimeError, subprocess.TimeoutExpired):  # the head is not up yet
                alive = []
            if len(alive) >= count:
                return alive
            time.sleep(2)
        raise TimeoutError(f"{len(alive)} of {count} Ray nodes came up; logs in {self.root}")

    def close(self) -> None:
        """End every node's processes, then remove the namespaces."""
        for node in reversed(self.nodes):
            node.kill()
        for ns in reversed(self.namespaces):
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", ns)
        for node in self.nodes:
            shutil.rmtree(self.ray_dir(node), ignore_errors=True)
