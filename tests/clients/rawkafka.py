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


def record_batch(values, magic=2, corrupt_crc=False, ts=1_700_000_000_000, keys=None):
    """`keys`: one per value (None: a null key); all null without them."""
    recs = b""
    for i, v in enumerate(values):
        k = keys[i] if keys else None
        key = varint(-1) if k is None else varint(len(k)) + k
        body = b"\x00" + varint(0) + varint(i) + key + varint(len(v)) + v + varint(0)
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


def produce_v3(topic: str, partition: int, records: bytes, corr=2, acks=-1, version=3):
    """Produce v2 or v3 (v2 has no transactional_id; both answer in the same layout)."""
    t = topic.encode()
    body = struct.pack(">h", -1) if version >= 3 else b""
    body += struct.pack(">hi", acks, 10_000) + struct.pack(">i", 1) + struct.pack(">h", len(t)) + t
    body += struct.pack(">i", 1) + struct.pack(">ii", partition, len(records)) + records
    return frame(header(0, version, corr) + body)


def connect(bootstrap, source=None):
    """`source`: the local address to talk from (reaches a node cut off by test_cluster.cut_off)."""
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10,
                                 source_address=(source, 0) if source else None)
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


def fetch_v4(topic: str, partition: int, offset: int, corr=3, max_wait_ms=500, min_bytes=1,
             max_bytes=1 << 20):
    """Fetch v4 (read_uncommitted) of one partition from `offset`."""
    t = topic.encode()
    body = struct.pack(">iiiib", -1, max_wait_ms, min_bytes, max_bytes, 0)
    body += struct.pack(">i", 1) + struct.pack(">h", len(t)) + t
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes)
    return frame(header(1, 4, corr) + body)


def parse_fetch_v4(data):
    """(correlation id, [(partition, error_code, high_watermark, records bytes)]) of the first
    topic."""
    corr, _throttle, ntopics = struct.unpack(">iii", data[:12])
    assert ntopics == 1, ntopics
    at = 12
    (tl,) = struct.unpack(">h", data[at:at + 2])
    at += 2 + tl
    (np,) = struct.unpack(">i", data[at:at + 4])
    at += 4
    out = []
    for _ in range(np):
        part, err, hw, _lso, naborted = struct.unpack(">ihqqi", data[at:at + 26])
        at += 26 + 16 * max(naborted, 0)
        (n,) = struct.unpack(">i", data[at:at + 4])
        at += 4
        recs = b"" if n < 0 else data[at:at + n]
        at += max(n, 0)
        out.append((part, err, hw, recs))
    return corr, out


def read_varint(buf, at):
    shift = z = 0
    while True:
        b = buf[at]
        at += 1
        z |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return (z >> 1) ^ -(z & 1), at


def parse_batches(data):
    """Every whole magic-2 batch in a fetched records blob (a trailing partial batch, which a
    broker may send when it cuts at max_bytes, is ignored) as dicts with base_offset,
    last_offset, crc_ok, compressed, codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd) and, for
    uncompressed batches, records [(offset, key, value,
    headers)]."""
    out = []
    at = 0
    while at + 12 <= len(data):
        base, length = struct.unpack(">qi", data[at:at + 12])
        end = at + 12 + length
        if end > len(data):
            break
        b = data[at:end]
        magic = b[16]
        (crc,) = struct.unpack(">I", b[17:21])
        attrs, last_delta = struct.unpack(">hi", b[21:27])
        (count,) = struct.unpack(">i", b[57:61])
        batch = {"base_offset": base, "last_offset": base + last_delta, "magic": magic,
                 "crc_ok": crc32c(b[21:]) == crc, "compressed": attrs & 7 != 0, "codec": attrs & 7,
                 "count": count}
        if magic == 2 and not attrs & 7:
            recs, p = [], 61
            for _ in range(count):
                rlen, p = read_varint(b, p)
                r_end = p + rlen
                p += 1  # attributes
                _ts_delta, p = read_varint(b, p)
                off_delta, p = read_varint(b, p)
                klen, p = read_varint(b, p)
                key = None if klen < 0 else bytes(b[p:p + klen])
                p += max(klen, 0)
                vlen, p = read_varint(b, p)
                value = None if vlen < 0 else bytes(b[p:p + vlen])
                p += max(vlen, 0)
                nh, p = read_varint(b, p)
                headers = []
                for _ in range(nh):
                    hk, p = read_varint(b, p)
                    name = bytes(b[p:p + hk])
                    p += hk
                    hv, p = read_varint(b, p)
                    headers.append((name, None if hv < 0 else bytes(b[p:p + hv])))
                    p += max(hv, 0)
                assert p == r_end, "record length does not match its fields"
                recs.append((base + off_delta, key, value, headers))
            batch["records"] = recs
        out.append(batch)
        at = end
    return out


def fetch_once(bootstrap, topic, partition, offset, max_wait_ms=0, corr=9, source=None):
    """One Fetch v4 on a fresh connection: (error_code, high_watermark, records bytes)."""
    s = connect(bootstrap, source)
    try:
        s.sendall(fetch_v4(topic, partition, offset, corr=corr, max_wait_ms=max_wait_ms))
        data = read_frame(s)
    finally:
        s.close()
    assert data is not None, "the broker closed the connection instead of answering a Fetch"
    corr_back, parts = parse_fetch_v4(data)
    assert corr_back == corr and len(parts) == 1 and parts[0][0] == partition, parts
    return parts[0][1:]


def uvarint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def read_uvarint(buf, at):
    shift = v = 0
    while True:
        b = buf[at]
        at += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, at


def api_versions_v3(corr=1, software=b"flumen-raw", version=b"1.0"):
    """ApiVersions v3: request header v2 (flexible) and a compact-string body."""
    head = struct.pack(">hhih", 18, 3, corr, 3) + b"raw" + b"\x00"
    body = uvarint(len(software) + 1) + software + uvarint(len(version) + 1) + version + b"\x00"
    return frame(head + body)


def parse_api_versions_v3(data):
    """(corr, error, {key: (min, max)}, [tagged field counts per api], throttle, top-level
    tagged fields [(tag, bytes)]); the response header is v0 even for flexible versions.
    Asserts the body is consumed exactly."""
    corr, err = struct.unpack(">ih", data[:6])
    n, at = read_uvarint(data, 6)
    keys, per_api = {}, []
    for _ in range(n - 1):
        k, lo, hi = struct.unpack(">hhh", data[at:at + 6])
        at += 6
        ntags, at = read_uvarint(data, at)
        per_api.append(ntags)
        for _ in range(ntags):
            _tag, at = read_uvarint(data, at)
            size, at = read_uvarint(data, at)
            at += size
        keys[k] = (lo, hi)
    (throttle,) = struct.unpack(">i", data[at:at + 4])
    at += 4
    ntags, at = read_uvarint(data, at)
    tags = []
    for _ in range(ntags):
        tag, at = read_uvarint(data, at)
        size, at = read_uvarint(data, at)
        tags.append((tag, bytes(data[at:at + size])))
        at += size
    assert at == len(data), f"{len(data) - at} bytes after the ApiVersions v3 body"
    return corr, err, keys, per_api, throttle, tags


def produce_record_errors(bootstrap, topic, keys, partition=0):
    """Produce v8 of one batch whose records have `keys` (None: no key); answers the
    partition's (error_code, [(batch_index, message)]): KIP-467's per-record errors."""
    values = [b"v%d" % i for i in range(len(keys))]
    req = produce_v3(topic, partition, record_batch(values, keys=keys), version=8)
    with connect(bootstrap) as s:
        s.sendall(req)
        data = read_frame(s)
    at = 8  # correlation id, topic count
    (tl,) = struct.unpack(">h", data[at:at + 2])
    at += 2 + tl + 4  # the name, the partition count (one)
    _part, err = struct.unpack(">ih", data[at:at + 6])
    at += 6 + 24  # base offset, log append time, log start offset
    (n,) = struct.unpack(">i", data[at:at + 4])
    at += 4
    errors = []
    for _ in range(n):
        idx, ml = struct.unpack(">ih", data[at:at + 6])
        at += 6
        msg = None if ml < 0 else data[at:at + ml].decode()
        at += max(ml, 0)
        errors.append((idx, msg))
    return err, errors


def incremental_alter_configs(bootstrap, resource_type, name, ops, validate_only=False, corr=11):
    """IncrementalAlterConfigs v0 for one resource, as Kafka's `kafka-configs.sh
    --entity-default` sends it (the cluster's broker defaults are the BROKER resource named
    "", which librdkafka, kafkajs and kafka-python refuse to send). `ops`: [(name, op code,
    value or None)]. Answers (error_code, error_message)."""
    def string(v):
        b = v.encode()
        return struct.pack(">h", len(b)) + b

    body = struct.pack(">i", 1) + struct.pack(">b", resource_type) + string(name)
    body += struct.pack(">i", len(ops))
    for key, op, value in ops:
        body += string(key) + struct.pack(">b", op)
        body += struct.pack(">h", -1) if value is None else string(value)
    body += struct.pack(">?", validate_only)
    s = connect(bootstrap)
    try:
        s.sendall(frame(header(44, 0, corr) + body))
        data = read_frame(s)
    finally:
        s.close()
    assert data is not None, "the broker closed the connection"
    got_corr, _throttle, n = struct.unpack(">iii", data[:12])
    assert (got_corr, n) == (corr, 1), (got_corr, n)
    (code, mlen) = struct.unpack(">hh", data[12:16])
    message = None if mlen < 0 else data[16:16 + mlen].decode()
    return code, message


def sasl_handshake(s, mechanism, corr=21):
    """SaslHandshake v1 on socket `s`: (error_code, [mechanisms]), or None if closed."""
    m = mechanism.encode()
    s.sendall(frame(header(17, 1, corr) + struct.pack(">h", len(m)) + m))
    data = read_frame(s)
    if data is None:
        return None
    got, code, n = struct.unpack(">ihi", data[:10])
    assert got == corr
    at, names = 10, []
    for _ in range(n):
        (ln,) = struct.unpack(">h", data[at:at + 2])
        names.append(data[at + 2:at + 2 + ln].decode())
        at += 2 + ln
    return code, names


def sasl_authenticate(s, auth_bytes, corr=22):
    """SaslAuthenticate v1: (error_code, message, auth_bytes, session_lifetime_ms), or None
    if the connection closed."""
    s.sendall(frame(header(36, 1, corr) + struct.pack(">i", len(auth_bytes)) + auth_bytes))
    data = read_frame(s)
    if data is None:
        return None
    got, code, mlen = struct.unpack(">ihh", data[:8])
    assert got == corr
    at = 8
    message = None
    if mlen >= 0:
        message = data[at:at + mlen].decode()
        at += mlen
    (blen,) = struct.unpack(">i", data[at:at + 4])
    out = data[at + 4:at + 4 + max(blen, 0)]
    at += 4 + max(blen, 0)
    (lifetime,) = struct.unpack(">q", data[at:at + 8])
    return code, message, out, lifetime


def metadata_v1(s, corr=23):
    """Metadata v1 (all topics): the response body, or None if the connection closed."""
    s.sendall(frame(header(3, 1, corr) + struct.pack(">i", -1)))
    return read_frame(s)


def describe_log_dirs_error(s, corr=24):
    """DescribeLogDirs v3 (flexible; all topics): the response's top-level error code."""
    head = struct.pack(">hhih", 35, 3, corr, 3) + b"raw" + b"\x00"
    s.sendall(frame(head + uvarint(0) + b"\x00"))
    data = read_frame(s)
    got = struct.unpack(">i", data[:4])[0]
    assert got == corr
    # Header tagged fields (1 byte), throttle_time_ms, then error_code.
    (code,) = struct.unpack(">h", data[9:11])
    return code


def follower_fetch_error(s, replica_id=1, corr=25):
    """Fetch v7 as broker `replica_id` (a follower), naming no partition: the top-level
    error code."""
    body = struct.pack(">iiiibii", replica_id, 0, 1, 1 << 20, 0, 0, -1)
    body += struct.pack(">ii", 0, 0)
    s.sendall(frame(header(1, 7, corr) + body))
    data = read_frame(s)
    got, _throttle, code = struct.unpack(">iih", data[:10])
    assert got == corr
    return code


def list_offsets_v1(s, topic, partition, timestamp=-1, corr=26):
    """ListOffsets v1 of one partition (-1: the end): (error_code, offset)."""
    t = topic.encode()
    body = struct.pack(">ii", -1, 1) + struct.pack(">h", len(t)) + t
    body += struct.pack(">iiq", 1, partition, timestamp)
    s.sendall(frame(header(2, 1, corr) + body))
    data = read_frame(s)
    got, ntopics = struct.unpack(">ii", data[:8])
    assert got == corr and ntopics == 1
    (tl,) = struct.unpack(">h", data[8:10])
    at = 10 + tl + 4
    _part, err, _ts, offset = struct.unpack(">ihqq", data[at:at + 22])
    return err, offset
