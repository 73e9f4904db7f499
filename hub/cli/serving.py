"""How ``lydian serve`` runs uvicorn: a server that says goodbye before shutting down.

On SIGTERM/SIGINT uvicorn closes every WebSocket with 1012 and only then runs the app's
lifespan shutdown, too late for the hub to send anything. :class:`GracefulServer` first stops
listening, then asks the hubs of its process to send ``reconnect`` and close with 1001
(waiting up to ``shutdown_grace`` for that to flush), and only then lets uvicorn carry on.
With ``--workers N`` every worker process runs it (:class:`GracefulProcess`).
"""

from __future__ import annotations

import socket
import sys

import uvicorn
from uvicorn.supervisors import multiprocess

STARTUP_FAILURE = 3  # uvicorn's exit status when the server did not start


class GracefulServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        from hub.core import goodbye_all

        for server in self.servers:
            server.close()  # no new connections while the open ones are told to go
        await goodbye_all()
        await super().shutdown(sockets)


class GracefulProcess(multiprocess.Process):
    """A worker of ``--workers N`` whose server is the :class:`GracefulServer` (the class is
    importable, so the spawned worker process unpickles this one)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = GracefulServer(config=self.config)
        return self._server


class _GracefulSupervisor(multiprocess.Multiprocess):
    """uvicorn's supervisor, starting :class:`GracefulProcess` workers (uvicorn builds its
    ``Process`` by module-level name; it is swapped for the supervisor's lifetime)."""

    def run(self) -> None:
        original = multiprocess.Process
        multiprocess.Process = GracefulProcess  # type: ignore[misc]
        try:
            super().run()
        finally:
            multiprocess.Process = original  # type: ignore[misc]


def run(config: uvicorn.Config) -> None:
    """``uvicorn.run`` for a ready config, with the graceful server (in every worker)."""
    if config.workers > 1:
        _GracefulSupervisor(config, sockets=[config.bind_socket()]).run()
        return
    config.load_app()
    server = GracefulServer(config=config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)
