# The route table's entries and one RPC's stream, for _grpc_h2.pyx (included
# there, before H2Connection; uses its cimports and _grpc_wire.pxi).

cdef class Route:
    """What a `:path` leads to: the handler, whether the RPC streams requests,
    and `abandoned(stream)`, called when a stream it has not answered closes
    (the client reset it, or the connection went): the request can be
    withdrawn before it runs."""

    cdef readonly object handler
    cdef readonly bint streaming
    cdef readonly str message_name
    cdef readonly object abandoned

    def __init__(self, handler, bint streaming, str message_name, abandoned=None):
        self.handler = handler
        self.streaming = streaming
        self.message_name = message_name
        self.abandoned = abandoned


cdef class H2Connection


cdef class H2Stream:
    """One RPC. Python answers through `reply` (unary) or `send` + `finish`."""

    cdef readonly int32_t stream_id
    cdef readonly Route route
    cdef readonly bytes path
    cdef readonly object payload  # the unary request message (bytes), once complete
    cdef readonly list metadata  # [(name, value)] custom request metadata, names lower-case
    cdef readonly double deadline  # time.monotonic() seconds; 0 = none
    cdef readonly Py_ssize_t inflight  # request messages handed to the handler, unanswered
    cdef readonly bint remote_closed  # the client has sent all it will
    cdef public object user  # per-stream state of a streaming handler
    cdef public bytes route_header  # the answer's `mlserve-route` value (a rollout's track), or None
    cdef H2Connection conn
    cdef bytearray inbuf  # the start of a message's 5-byte prefix, until it is whole
    cdef bytes msg  # the message being received, made at its declared size (or None)
    cdef Py_ssize_t msg_filled  # its bytes received so far
    cdef uint8_t msg_flag  # its compressed-flag
    # Framed answers not yet taken by nghttp2: pieces of bytes, from out_index
    # on, out_pos bytes of that one taken already; out_bytes in all. A large
    # answer is kept as the bytes object it came as, behind its 5-byte prefix
    # (no copy), where one growing bytearray copied every answer into itself
    # and, growing, reallocated: with 16 MiB of answers waiting on a client
    # that does not read, the heap's high-water mark went to twice that.
    cdef list out
    cdef Py_ssize_t out_index
    cdef Py_ssize_t out_pos
    cdef Py_ssize_t out_bytes
    cdef object encoding  # the request's grpc-encoding, or None
    cdef Py_ssize_t header_bytes
    cdef int error_status  # a transport-level refusal found while reading (0 = none)
    cdef str error_message
    cdef bint is_post, is_grpc, responded, done, deferred, closed
    cdef int status
    cdef bytes status_message
    cdef list trailers

    def __cinit__(self):
        self.metadata = []
        self.inbuf = bytearray()
        self.out = []

    @property
    def open(self) -> bool:
        """False once the stream is closed or reset (answers are then dropped)."""
        return not self.closed and not self.done

    def time_remaining(self):
        """Seconds until the client's `grpc-timeout` runs out, or None."""
        if self.deadline == 0:
            return None
        return self.deadline - _now()

    def metadata_value(self, str key):
        for name, value in self.metadata:
            if name == key:
                return value
        return None

    def reply(self, bytes message):
        """Answer a unary RPC: one message and status OK."""
        self._append(message)
        self._finish(0, b"", None)

    def send(self, bytes message):
        """Send one message on a streaming RPC (the answer to the oldest request
        message not yet answered, if any: that is what bounds them in flight)."""
        if self.inflight:
            self.inflight -= 1
            self.conn._answered(1)
        self._append(message)
        self._kick()

    def finish(self, int status, str message="", trailers=None):
        """End the RPC with this status (and trailing metadata [(name, value)])."""
        self._finish(status, percent_encode(message) if message else b"", trailers)

    cdef _append(self, bytes message):
        if self.done or self.closed:
            return
        cdef Py_ssize_t n = PyBytes_GET_SIZE(message)
        cdef bytes framed
        cdef uint8_t *prefix
        if n <= _COPIED_ANSWER:  # small: prefix and message in one piece
            framed = PyBytes_FromStringAndSize(NULL, n + 5)
            prefix = <uint8_t*>PyBytes_AS_STRING(framed)
            memcpy(prefix + 5, PyBytes_AS_STRING(message), n)
        else:  # large: the prefix alone, then the message as it is
            framed = PyBytes_FromStringAndSize(NULL, 5)
            prefix = <uint8_t*>PyBytes_AS_STRING(framed)
        prefix[0] = 0
        prefix[1] = (n >> 24) & 0xFF
        prefix[2] = (n >> 16) & 0xFF
        prefix[3] = (n >> 8) & 0xFF
        prefix[4] = n & 0xFF
        self.out.append(framed)
        if n > _COPIED_ANSWER:
            self.out.append(message)
        self.out_bytes += n + 5
        self.conn.pending_out += n + 5
        if self.conn.pending_out > self.conn.max_pending_out:
            self.conn._update_reading()

    cdef Py_ssize_t _take_answers(self, uint8_t *buf, Py_ssize_t length) except -1:
        """Copy up to `length` waiting answer bytes into `buf` (nghttp2's
        frame); returns how many."""
        cdef Py_ssize_t want = self.out_bytes if self.out_bytes < length else length
        cdef Py_ssize_t copied = 0, left, take
        cdef bytes piece
        while copied < want:
            piece = <bytes>PyList_GET_ITEM(self.out, self.out_index)
            left = PyBytes_GET_SIZE(piece) - self.out_pos
            take = left if left < want - copied else want - copied
            memcpy(buf + copied, PyBytes_AS_STRING(piece) + self.out_pos, take)
            copied += take
            if take == left:
                self.out_index += 1
                self.out_pos = 0
            else:
                self.out_pos += take
        self.out_bytes -= copied
        if self.out_bytes == 0:
            self._clear_answers()
        elif self.out_index >= 64 and 2 * self.out_index >= len(self.out):
            del self.out[: self.out_index]  # a stream that never drains: keep it short
            self.out_index = 0
        return copied

    cdef _clear_answers(self):
        self.out.clear()
        self.out_index = 0
        self.out_pos = 0
        self.out_bytes = 0

    cdef _finish(self, int status, bytes message, object trailers):
        if self.done or self.closed:
            return
        self.done = True
        self.status = status
        self.status_message = message
        self.trailers = list(trailers) if trailers else None
        self._kick()

    cdef _kick(self):
        """Start or resume the response, and have the connection write soon."""
        if self.closed:
            return
        cdef H2Connection conn = self.conn
        if not self.responded:
            self.responded = True
            if self.done and not self.out_bytes:
                conn._trailers_only(self)
            else:
                conn._submit_response(self)
        elif self.deferred:
            self.deferred = False
            nghttp2_session_resume_data(conn.session, self.stream_id)
        conn._want_flush()

    cdef _refuse(self, int status, str message):
        """A transport-level error found while reading: answered once headers are in."""
        if self.error_status == 0:
            self.error_status = status
            self.error_message = message
