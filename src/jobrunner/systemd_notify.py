"""sd_notify: tell systemd (Type=notify) when we are ready, alive and stopping.

The protocol is one datagram to the socket in $NOTIFY_SOCKET; a few lines, so no dependency.
Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import os
import socket


class SystemdNotifier:
    def __init__(self, address: str | None = None) -> None:
        self._address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        if self._address and self._address.startswith("@"):
            self._address = "\0" + self._address[1:]  # abstract namespace

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, message: str) -> bool:
        if not self._address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(self._address)
                sock.sendall(message.encode())
            except OSError:
                return False
        return True

    def ready(self, status: str = "processing jobs") -> bool:
        return self.notify(f"READY=1\nSTATUS={status}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1\nSTATUS=draining running jobs")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    @staticmethod
    def watchdog_interval() -> float | None:
        """Half the watchdog timeout systemd set for us (WATCHDOG_USEC), or None."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1_000_000 / 2
        except ValueError:
            return None
