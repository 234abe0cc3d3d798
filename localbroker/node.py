"""A RabbitMQ node of one's own, to stop and start without touching the shared broker.

It runs from the installed ``rabbitmq-server`` as the current user, with every
file (Erlang cookie, Mnesia data, logs, config) in a directory of its own, on
free ports, listening on 127.0.0.1 only and with no plugins, so that nothing
competes with the shared node for its ports. Stopping and starting it again
keeps its name, port and data, like a broker restart in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import aio_pika

# Debian's /usr/sbin wrappers switch to the rabbitmq user, who cannot read a
# root-owned temporary directory; the scripts behind them run as the caller.
DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")
START_S = 60.0
STOP_S = 30.0


def _script(name: str) -> str:
    if (DEBIAN_BIN / name).exists():
        return str(DEBIAN_BIN / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (Debian: apt-get install rabbitmq-server)")
    return found


def free_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def installed() -> bool:
    """Whether RabbitMQ's own scripts (``rabbitmq-server``, ``rabbitmqctl``) are on this machine."""
    return all((DEBIAN_BIN / name).exists() or shutil.which(name) is not None
               for name in ("rabbitmq-server", "rabbitmqctl"))


class PrivateBroker:
    """One RabbitMQ node in ``base``; ``close`` leaves nothing running.

    Nodes given the same ``cookie`` can be clustered (see :mod:`localbroker.cluster`).
    """

    def __init__(self, base: Path, cookie: str | None = None) -> None:
        self.base = base
        self.node = f"grid-test-{uuid.uuid4().hex[:10]}@localhost"
        self.port, self.dist_port = free_ports(2)
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.process: subprocess.Popen | None = None
        self.starts = 0
        base.mkdir(parents=True, exist_ok=True)
        cookie_file = base / ".erlang.cookie"
        cookie_file.write_text(cookie or secrets.token_hex(16).upper())
        cookie_file.chmod(0o400)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq.conf").write_text("")
        (base / "advanced.config").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith(("RABBITMQ_", "ERL_"))}
        self.env = {
            **environment,
            "HOME": str(base),  # the node and the CLI read the same cookie from here
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def start(self, within: float = START_S) -> None:
        """Start the node (again, with the same name, port and data) and wait for AMQP."""
        assert not self.running, "the broker is already running"
        self.process = self._spawn()
        await self.wait_for_amqp(within)

    async def wait_for_amqp(self, within: float = START_S) -> None:
        """Until the node accepts an AMQP connection (while its process runs)."""
        deadline = time.monotonic() + within
        while True:
            if not self.running:
                raise RuntimeError(f"rabbitmq-server exited ({self.process.returncode}):\n"
                                   f"{self.output_tail()}")
            connection = await self._connect_once()
            if connection is not None:
                await connection.close()
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker not accepting AMQP within {within} s:\n"
                                   f"{self.output_tail()}")
            await asyncio.sleep(0.2)

    async def _connect_once(self) -> aio_pika.abc.AbstractConnection | None:
        if not await self._listening():
            return None
        try:
            return await aio_pika.connect(self.url, timeout=1)
        except Exception:  # noqa: BLE001 - listening, not serving AMQP yet
            return None

    async def _listening(self) -> bool:
        """A TCP connect to the AMQP port: checked first, so that a node still booting
        does not fill the log with the AMQP client's connection errors."""
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 1)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    def _spawn(self) -> subprocess.Popen:
        self.starts += 1
        with open(self.base / f"server-{self.starts}.out", "wb") as output:
            return subprocess.Popen(
                [_script("rabbitmq-server")], cwd=self.base, env=self.env,
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, to kill as a whole
            )

    async def stop(self, within: float = STOP_S) -> None:
        """Stop the node the way an operator does (``rabbitmqctl stop``), and wait for it."""
        if not self.running:
            return
        code, output = await self.ctl("stop", within=within)
        if code != 0:
            raise RuntimeError(f"rabbitmqctl stop failed ({code}): {output}")
        await asyncio.wait_for(asyncio.to_thread(self.process.wait), within)

    async def ctl(self, *args: str, within: float = STOP_S) -> tuple[int, str]:
        """Run ``rabbitmqctl -n <node> ARGS`` against this node, bounded."""
        process = await asyncio.create_subprocess_exec(
            _script("rabbitmqctl"), "-n", self.node, *args, env=self.env, cwd=self.base,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), within)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        return process.returncode, output.decode(errors="replace")

    async def ctl_ok(self, *args: str, within: float = STOP_S) -> str:
        """Like :meth:`ctl`, raising RuntimeError unless the command succeeds."""
        code, output = await self.ctl(*args, within=within)
        if code != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node} failed ({code}):\n"
                               f"{output}")
        return output

    def kill(self) -> None:
        """SIGKILL the node's process group if it still runs (a crash, to its clients)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    async def close(self) -> None:
        """Stop gracefully if possible, else kill: nothing is left running."""
        try:
            await self.stop()
        except Exception:  # noqa: BLE001 - fall back to killing it
            pass
        finally:
            self.kill()

    def output_tail(self, lines: int = 30) -> str:
        text = []
        for path in sorted(self.base.glob("server-*.out")) + sorted(self.base.glob("log/*.log")):
            with contextlib.suppress(OSError):
                text.append(f"--- {path.name}\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(text)
