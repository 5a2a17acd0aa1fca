"""Whether a RocketMQ 4.x broker serves a topic, asked in the 4.x remoting protocol itself.

librocketmq's push consumer retries in its own threads and says nothing to its caller: its C API has no
call that tells whether the NameServer or the broker answers (failures go only to its own log file). So
the 4.x consumer asks, as the library does: the topic's route from a NameServer (``GET_ROUTEINFO_BY_TOPIC``),
then a TCP connection to a master broker of that route. A broker stopped cleanly unregisters (no route);
one killed keeps its route for up to two minutes but refuses the connection.

A remoting frame: its length (4 bytes), the serialisation and header length (4 bytes: JSON is 0), the
header as JSON, the body.
"""

from __future__ import annotations

import json
import re
import socket
import struct
from itertools import count

from wanhook.service.core import documents

GET_ROUTEINFO_BY_TOPIC = 105
SUCCESS = 0
# A route answer names a few brokers: a frame past this is not one, whatever length the peer declares.
MAX_FRAME = 4 << 20
# A route's master brokers: ``"brokerAddrs":{0:"host:port",1:...}`` (id 0 is the master; the key is
# unquoted in the NameServer's fastjson output for older clients, quoted for newer).
_BROKER_ADDRS = re.compile(rb'"brokerAddrs":\{([^}]*)\}')
_MASTER = re.compile(rb'"?0"?:"([^"]+)"')
_opaque = count(1)


def _address(item: str) -> tuple[str, int]:
    host, _, port = item.strip().removeprefix("http://").removeprefix("https://").rpartition(":")
    return host, int(port)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the NameServer")
        data += chunk
    return data


def route_masters(namesrv: str, topic: str, timeout: float) -> list[str]:
    """The master broker addresses of ``topic``'s route from the NameServer at ``namesrv`` (``host:port``).
    Raises OSError when it does not answer, LookupError when it has no route for the topic."""
    header = json.dumps(
        {
            "code": GET_ROUTEINFO_BY_TOPIC,
            "language": "PYTHON",
            "version": 0,
            "opaque": next(_opaque),
            "flag": 0,
            "extFields": {"topic": topic},
        }
    ).encode()
    with socket.create_connection(_address(namesrv), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">II", 4 + len(header), len(header)) + header)
        (length,) = struct.unpack(">I", _read(sock, 4))
        if not 4 <= length <= MAX_FRAME:
            raise LookupError(f"the name server's answer declares {length} bytes (at most {MAX_FRAME} taken)")
        frame = _read(sock, length)
    header_length = struct.unpack(">I", frame[:4])[0] & 0xFFFFFF
    answer = documents.load(frame[4 : 4 + header_length], lambda code, message: LookupError(message))
    if not isinstance(answer, dict):
        raise LookupError("the name server's answer has no header object")
    body = frame[4 + header_length :]
    if answer.get("code") != SUCCESS:
        # The remark runs over lines (a link to the FAQ after the reason): its first line, for one log line.
        remark = (str(answer.get("remark") or "").strip().splitlines() or [""])[0][:200]
        raise LookupError(f"no route for topic {topic} (code {answer.get('code')}: {remark})")
    masters = [found.decode() for brokers in _BROKER_ADDRS.findall(body) for found in _MASTER.findall(brokers)]
    if not masters:
        raise LookupError(f"the route for topic {topic} names no master broker")
    return masters


def broker_unreachable(namesrv: str, topic: str, timeout: float = 3.0) -> str | None:
    """Why no broker serves ``topic`` through the NameServers ``namesrv`` (``host:port;...``), in one short
    line; None when one does (a NameServer gave its route and one of its masters takes a connection)."""
    causes = []
    for item in filter(None, (part.strip() for part in namesrv.split(";"))):
        try:
            masters = route_masters(item, topic, timeout)
        except LookupError as exc:
            causes.append(f"NameServer {item}: {exc}")
            continue
        except (OSError, ValueError) as exc:
            causes.append(f"NameServer {item}: {getattr(exc, 'strerror', None) or type(exc).__name__}")
            continue
        for master in masters:
            try:
                socket.create_connection(_address(master), timeout=timeout).close()
                return None
            except (OSError, ValueError) as exc:
                causes.append(f"broker {master}: {getattr(exc, 'strerror', None) or type(exc).__name__}")
    return "; ".join(causes) or "no NameServer address"
