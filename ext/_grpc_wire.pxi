# gRPC-over-HTTP/2 wire helpers for _grpc_h2.pyx (included there): the clock,
# big-endian lengths, header-name matching, grpc-timeout and grpc-message, and
# building nghttp2 name/value pairs (uses the cimports of _grpc_h2.pyx).

cdef inline double _now() noexcept nogil:
    """time.monotonic() (CLOCK_MONOTONIC, the clock Python uses for it)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline Py_ssize_t _be32(const uint8_t *p) noexcept:
    return (<Py_ssize_t>p[0] << 24) | (<Py_ssize_t>p[1] << 16) | (<Py_ssize_t>p[2] << 8) | p[3]


cdef inline bint _is(const uint8_t *name, size_t namelen, const char *literal, size_t n) noexcept:
    return namelen == n and memcmp(name, literal, n) == 0


cdef double _parse_timeout(const uint8_t *value, size_t n) noexcept:
    """`grpc-timeout`: up to 8 digits and a unit (H M S m u n); -1 if malformed."""
    cdef double amount = 0
    cdef size_t i
    cdef uint8_t unit
    if n < 2 or n > 9:
        return -1
    for i in range(n - 1):
        if value[i] < 48 or value[i] > 57:
            return -1
        amount = amount * 10 + (value[i] - 48)
    unit = value[n - 1]
    if unit == 72:  # H
        return amount * 3600
    if unit == 77:  # M
        return amount * 60
    if unit == 83:  # S
        return amount
    if unit == 109:  # m
        return amount * 1e-3
    if unit == 117:  # u
        return amount * 1e-6
    if unit == 110:  # n
        return amount * 1e-9
    return -1


def percent_encode(message: str) -> bytes:
    """`grpc-message` encoding: UTF-8, then %XX for bytes outside 0x20-0x7E and '%'."""
    raw = message.encode("utf-8", "replace")
    out = bytearray()
    for byte in raw:
        if byte < 0x20 or byte > 0x7E or byte == 0x25:
            out += b"%%%02X" % byte
        else:
            out.append(byte)
    return bytes(out)


cdef inline void _static_nv(nghttp2_nv *nv, const char *name, const char *value) noexcept:
    """A header from C string literals (nghttp2 need not copy them)."""
    cdef size_t i = 0
    while name[i]:
        i += 1
    cdef size_t j = 0
    while value[j]:
        j += 1
    nv.name = <uint8_t*>name
    nv.namelen = i
    nv.value = <uint8_t*>value
    nv.valuelen = j
    nv.flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE


cdef inline void _bytes_nv(nghttp2_nv *nv, bytes name, bytes value) noexcept:
    nv.name = <uint8_t*>PyBytes_AS_STRING(name)
    nv.namelen = PyBytes_GET_SIZE(name)
    nv.value = <uint8_t*>PyBytes_AS_STRING(value)
    nv.valuelen = PyBytes_GET_SIZE(value)
    nv.flags = NGHTTP2_NV_FLAG_NONE  # nghttp2 copies them before we return
