"""Hand-made Kafka frames for bad-input tests: ApiVersions v0 and Produce v3 with a magic-2
record batch whose CRC32C is computed here (Castagnoli, reflected 0x82F63B78)."""
import socket
import struct

_TABLE = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    _TABLE.append(c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def varint(v: int) -> bytes:
    z = (v << 1) ^ (v >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def record_batch(values, magic=2, corrupt_crc=False, ts=1_700_000_000_000):
    recs = b""
    for i, v in enumerate(values):
        body = b"\x00" + varint(0) + varint(i) + varint(-1) + varint(len(v)) + v + varint(0)
        recs += varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, ts, ts, -1, -1, -1, len(values)) + recs
    crc = crc32c(after_crc) ^ (1 if corrupt_crc else 0)
    head = struct.pack(">ib", 0, magic) + struct.pack(">I", crc)
    batch_len = len(head) + len(after_crc)
    return struct.pack(">qi", 0, batch_len) + head + after_crc


def header(api_key, version, corr, client=b"raw"):
    return struct.pack(">hhih", api_key, version, corr, len(client)) + client


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def api_versions(version=0, corr=1):
    return frame(header(18, version, corr))


def produce_v3(topic: str, partition: int, records: bytes, corr=2, acks=-1):
    t = topic.encode()
    body = struct.pack(">hhi", -1, acks, 10_000) + struct.pack(">i", 1) + struct.pack(">h", len(t)) + t
    body += struct.pack(">i", 1) + struct.pack(">ii", partition, len(records)) + records
    return frame(header(0, 3, corr) + body)


def connect(bootstrap):
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def read_frame(s):
    """A response frame, or None when the broker closed the connection."""
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (n,) = struct.unpack(">i", head)
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def parse_api_versions_v0(data):
    corr, err, n = struct.unpack(">ihi", data[:10])
    keys = {}
    for i in range(n):
        k, lo, hi = struct.unpack(">hhh", data[10 + 6 * i:16 + 6 * i])
        keys[k] = (lo, hi)
    return corr, err, keys


def parse_produce_v3(data):
    """[(partition, error_code, base_offset)] of the first topic."""
    corr, ntopics = struct.unpack(">ii", data[:8])
    at = 8
    (tl,) = struct.unpack(">h", data[at:at + 2])
    at += 2 + tl
    (np,) = struct.unpack(">i", data[at:at + 4])
    at += 4
    out = []
    for _ in range(np):
        part, err, base, _lat = struct.unpack(">ihqq", data[at:at + 22])
        at += 22
        out.append((part, err, base))
    return corr, out
