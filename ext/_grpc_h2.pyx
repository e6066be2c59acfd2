# cython: language_level=3
"""gRPC over HTTP/2 on libnghttp2: the native transport's per-request protocol work.

An `H2Connection` is the asyncio Protocol of one client connection. It feeds
the bytes it receives to an nghttp2 server session; nghttp2's callbacks (C
functions here) collect each stream's headers and gRPC length-prefixed
messages. After each read, every completed request is handed to Python with
one call: `handler(stream)` for a unary RPC, `handler(stream, message)` for
each message of a streaming one (and `handler(stream, None)` when the client
half-closes). Python answers through the stream (`reply`, `send`, `finish`);
framing, response headers and trailers (`grpc-status`, percent-encoded
`grpc-message`) are built here, and everything nghttp2 has to send goes out in
one transport write per read or per event-loop turn.

The transport knows nothing of V2: a route table maps `:path` to a handler."""

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.string cimport memcmp, memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import zlib


include "_nghttp2.pxi"

# gRPC status codes used by the transport itself (the data plane's come from Python).
cdef enum:
    _INTERNAL = 13
    _UNIMPLEMENTED = 12
    _RESOURCE_EXHAUSTED = 8
    _INVALID_ARGUMENT = 3
    _FRAME_PREFIX = 5
    _MAX_TRAILERS = 16
    # Answers up to this size are copied behind their prefix into one piece (a
    # piece costs more than copying a few KB); larger ones are kept as they are.
    _COPIED_ANSWER = 4096

cdef nghttp2_session_callbacks *_callbacks = NULL
# The initial-metadata header that says which track of a rollout answered.
cdef bytes _ROUTE_HEADER = b"mlserve-route"
# Bytes of request messages received but not yet complete, over all connections
# of this process, and the most they may hold (set_buffer_limit).
cdef Py_ssize_t _buffered_total = 0
cdef Py_ssize_t _buffered_limit = 1 << 30
# What uvloop reads each connection's socket into, one buffer for them all,
# as uvloop's own: the loop reads one socket at a time and nghttp2 is done
# with the bytes (a message's are copied out) before the read returns.
cdef bytearray _read_buffer = bytearray(256 * 1024)


def set_buffer_limit(Py_ssize_t limit):
    """The most bytes of unfinished request messages this process holds, over all
    connections; a stream that would go over it is refused with RESOURCE_EXHAUSTED."""
    global _buffered_limit
    _buffered_limit = limit


def buffered_bytes():
    """Bytes of unfinished request messages held now, over all connections."""
    return _buffered_total


include "_grpc_wire.pxi"


include "_h2_stream.pxi"


cdef class H2Connection:
    """The asyncio Protocol of one HTTP/2 connection (h2c or TLS with ALPN h2)."""

    cdef nghttp2_session *session
    cdef object transport
    cdef dict routes
    cdef dict streams
    cdef list ready
    cdef object loop
    cdef object registry  # the server's set of live connections
    cdef Py_ssize_t max_message
    cdef Py_ssize_t max_header_bytes
    cdef Py_ssize_t max_buffered  # unfinished request bytes this connection may hold
    cdef readonly Py_ssize_t buffered  # unfinished request bytes held now
    cdef readonly Py_ssize_t pending_out  # answer bytes framed, not yet taken by nghttp2
    cdef Py_ssize_t max_pending_out
    cdef readonly Py_ssize_t inflight  # streamed request messages handed to Python, not answered
    cdef Py_ssize_t max_inflight
    cdef uint32_t max_streams
    cdef bint in_read, flush_scheduled, write_paused, goaway_sent
    cdef readonly bint lingering  # all said: half-closed, discarding what still arrives
    cdef object close_gently  # half-close and close later: a timer (runtime/closing.py)
    cdef object linger_timer
    cdef readonly bint read_paused
    # Answers backed up on the client's flow-control window: its requests'
    # connection window is held back (`held` bytes unconsumed) instead.
    cdef readonly bint holding
    cdef Py_ssize_t held
    cdef readonly double last_activity
    cdef readonly double ping_sent  # when our keepalive PING went out (0 = none pending)

    def __cinit__(self):
        self.session = NULL

    def __init__(
        self,
        dict routes,
        object registry,
        *,
        Py_ssize_t max_message,
        Py_ssize_t max_header_bytes=16384,
        uint32_t max_streams=1000,
        Py_ssize_t max_buffered=0,
        object close_gently=None,
    ):
        self.routes = routes
        self.close_gently = close_gently
        self.registry = registry
        self.streams = {}
        self.ready = []
        self.max_message = max_message
        self.max_header_bytes = max_header_bytes
        self.max_streams = max_streams
        # Enough for one message at the limit beside others in flight.
        self.max_buffered = max_buffered or max(2 * max_message, 16 << 20)
        self.max_pending_out = 16 << 20
        self.max_inflight = 256

    def __dealloc__(self):
        if self.session != NULL:
            nghttp2_session_del(self.session)
            self.session = NULL

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport):
        import asyncio

        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.last_activity = _now()
        self.registry.add(self)
        cdef nghttp2_option *option
        nghttp2_option_new(&option)
        nghttp2_option_set_max_outbound_ack(option, 1000)  # PING / SETTINGS floods
        nghttp2_option_set_max_settings(option, 32)
        nghttp2_option_set_no_auto_window_update(option, 1)  # _on_data_chunk consumes
        nghttp2_option_set_stream_reset_rate_limit(option, 1000, 33)  # CVE-2023-44487
        nghttp2_option_set_max_continuations(option, 8)  # CONTINUATION floods
        rv = nghttp2_session_server_new2(&self.session, _callbacks, <void*>self, option)
        nghttp2_option_del(option)
        if rv != 0:
            transport.close()
            raise MemoryError(nghttp2_strerror(rv).decode())
        cdef nghttp2_settings_entry settings[4]
        settings[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        settings[0].value = self.max_streams
        settings[1].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
        settings[1].value = 1 << 20
        settings[2].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
        settings[2].value = <uint32_t>self.max_header_bytes
        settings[3].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH
        settings[3].value = 0
        nghttp2_submit_settings(self.session, NGHTTP2_FLAG_NONE, settings, 4)
        nghttp2_session_set_local_window_size(self.session, NGHTTP2_FLAG_NONE, 0, 16 << 20)
        self._flush()

    def connection_lost(self, exc):
        self.registry.discard(self)
        self.transport = None
        if self.linger_timer is not None:
            self.linger_timer.cancel()
            self.linger_timer = None
        streams = list(self.streams.values())
        self.streams.clear()
        self.ready.clear()
        for stream in streams:
            self._close_stream(<H2Stream>stream)

    def get_buffer(self, Py_ssize_t sizehint):
        """uvloop reads the socket straight into the shared read buffer (the
        protocol is a BufferedProtocol by its methods): no bytes object is
        made and filled for each read, as `data_received` needs."""
        return _read_buffer

    def buffer_updated(self, Py_ssize_t nbytes):
        self._received(<const uint8_t*>PyByteArray_AS_STRING(_read_buffer), nbytes)

    def data_received(self, bytes data):
        """The standard library's loop, which knows buffered protocols only by
        their class, reads into bytes and calls this."""
        self._received(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))

    cdef _received(self, const uint8_t *data, Py_ssize_t length):
        if self.session == NULL or self.transport is None or self.lingering:
            return
        self.last_activity = _now()
        self.in_read = True
        cdef ssize_t rv = nghttp2_session_mem_recv(self.session, data, length)
        self.in_read = False
        if rv < 0:  # nghttp2 queued a GOAWAY where the protocol asks for one
            self.ready.clear()
            self._flush()
            self._linger()
            return
        if self.ready:
            self._dispatch()
        self._flush()

    def eof_received(self):
        return False  # close our side too

    def pause_writing(self):
        """The client reads slower than we answer: stop reading its requests too."""
        self.write_paused = True
        self._update_reading()

    def resume_writing(self):
        self.write_paused = False
        self._update_reading()
        self._flush()

    cdef _update_reading(self):
        """Back-pressure, two kinds. While the socket will not take our answers
        (write_paused) or many requests are unanswered (inflight), stop
        reading the socket: both clear without the client's help. While
        answers wait on the client's flow-control window (pending_out), keep
        reading, for the WINDOW_UPDATEs that open it (a paused socket would
        never see them: a client that reads late would wait forever), but
        hold back the connection window its requests need: it may send at
        most what the window has left, 16 MiB."""
        if self.transport is None:
            return
        cdef bint closing = self.goaway_sent or self.lingering
        if not closing and (self.write_paused or self.inflight > self.max_inflight):
            if not self.read_paused:
                self.transport.pause_reading()
                self.read_paused = True
        elif self.read_paused and self.inflight <= self.max_inflight // 2:
            self.transport.resume_reading()
            self.read_paused = False
        if not closing and self.pending_out > self.max_pending_out:
            self.holding = True
        elif self.holding and (closing or self.pending_out <= self.max_pending_out // 2):
            self.holding = False
            if self.held and self.session != NULL:
                nghttp2_session_consume_connection(self.session, self.held)
                self.held = 0
                self._want_flush()

    cdef _answered(self, Py_ssize_t n):
        self.inflight -= n
        if self.read_paused:
            self._update_reading()

    cdef _taken(self, Py_ssize_t n):
        self.pending_out -= n
        if self.holding:
            self._update_reading()

    # -- control (called by the server) --------------------------------------

    def shutdown(self):
        """GOAWAY: finish the streams we have, accept no new ones, then close."""
        if self.session == NULL or self.goaway_sent or self.transport is None:
            return
        self.goaway_sent = True
        self._update_reading()  # read again, if paused, to see a client that has gone
        nghttp2_submit_goaway(
            self.session, NGHTTP2_FLAG_NONE,
            nghttp2_session_get_last_proc_stream_id(self.session), NGHTTP2_NO_ERROR, NULL, 0)
        self._flush()

    def ping(self):
        """A keepalive PING; `ping_sent` stays set until the client acknowledges it."""
        if self.session == NULL or self.transport is None:
            return
        nghttp2_submit_ping(self.session, NGHTTP2_FLAG_NONE, NULL)
        self.ping_sent = _now()
        self._flush()

    def abort(self):
        if self.transport is not None:
            self.transport.abort()

    # -- answering ---------------------------------------------------------

    cdef _dispatch(self):
        cdef list ready = self.ready
        self.ready = []
        cdef H2Stream stream
        cdef Route route
        for item in ready:
            stream = <H2Stream>item[0]
            if stream.closed:
                continue
            route = stream.route
            try:
                if route.streaming:
                    if item[1] is not None:
                        stream.inflight += 1
                        self.inflight += 1
                    route.handler(stream, item[1])
                else:
                    route.handler(stream)
            except Exception as exc:  # a handler bug: answer this RPC, keep the connection
                stream.finish(_INTERNAL, f"internal error: {exc!r}")
        if self.inflight > self.max_inflight:
            self._update_reading()

    cdef _want_flush(self):
        if self.in_read or self.flush_scheduled or self.transport is None:
            return
        self.flush_scheduled = True
        self.loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self):
        self.flush_scheduled = False
        self._flush()

    cdef _flush(self):
        """Everything nghttp2 has to send, in one write."""
        if self.session == NULL or self.transport is None or self.write_paused or self.lingering:
            return
        cdef const uint8_t *chunk
        cdef ssize_t n
        cdef bytearray pending = None
        cdef bytes first = None
        while True:
            n = nghttp2_session_mem_send(self.session, &chunk)
            if n < 0:
                self.transport.close()
                return
            if n == 0:
                break
            if first is None:
                first = PyBytes_FromStringAndSize(<const char*>chunk, n)
            else:
                if pending is None:
                    pending = bytearray(first)
                pending += (<const char*>chunk)[:n]
        if pending is not None:
            self.transport.write(pending)
        elif first is not None:
            self.transport.write(first)
        if not nghttp2_session_want_read(self.session) and not nghttp2_session_want_write(
            self.session
        ):
            self._linger()

    cdef _linger(self):
        """Done with this connection (after GOAWAY): close it without a reset,
        with `close_gently`, discarding what still arrives (without one: at once)."""
        if self.lingering or self.transport is None:
            return
        if self.close_gently is None:
            self.transport.close()
            return
        self.lingering = True
        if self.read_paused:
            self.transport.resume_reading()
            self.read_paused = False
        self.linger_timer = self.close_gently(self.transport)

    cdef _submit_response(self, H2Stream stream):
        cdef nghttp2_nv nva[4]
        cdef size_t count = 3
        _static_nv(&nva[0], b":status", b"200")
        _static_nv(&nva[1], b"content-type", b"application/grpc")
        _static_nv(&nva[2], b"grpc-accept-encoding", b"identity,deflate,gzip")
        if stream.route_header is not None:  # which track of a rollout answered
            _bytes_nv(&nva[3], _ROUTE_HEADER, stream.route_header)
            count = 4
        cdef nghttp2_data_provider provider
        provider.source.ptr = <void*>stream
        provider.read_callback = _read_body
        nghttp2_submit_response(self.session, stream.stream_id, nva, count, &provider)

    cdef _trailers_only(self, H2Stream stream):
        """An answer without messages: one HEADERS frame that ends the stream."""
        cdef nghttp2_nv nva[3 + 2 + _MAX_TRAILERS + 1]
        cdef size_t n
        if stream.is_grpc:
            _static_nv(&nva[0], b":status", b"200")
        else:
            _static_nv(&nva[0], b":status", b"415")
        _static_nv(&nva[1], b"content-type", b"application/grpc")
        _static_nv(&nva[2], b"grpc-accept-encoding", b"identity,deflate,gzip")
        keep = _status_nv(stream, &nva[3], &n)
        if stream.route_header is not None:  # which track of a rollout answered
            _bytes_nv(&nva[3 + n], _ROUTE_HEADER, stream.route_header)
            n += 1
        nghttp2_submit_response(self.session, stream.stream_id, nva, 3 + n, NULL)
        del keep
        # No RST_STREAM(NO_ERROR) to cut the client's upload short: grpc-core clients
        # report that as INTERNAL instead of the status sent. The rest of the request
        # is read and dropped unbuffered (_data ignores a stream that is done).

    # -- reading (from nghttp2's callbacks) ---------------------------------

    cdef int _begin_headers(self, const nghttp2_frame *frame):
        if frame.hd.type != NGHTTP2_HEADERS or frame.headers.cat != NGHTTP2_HCAT_REQUEST:
            return 0
        cdef H2Stream stream = H2Stream.__new__(H2Stream)
        stream.stream_id = frame.hd.stream_id
        stream.conn = self
        self.streams[frame.hd.stream_id] = stream
        return 0

    cdef int _header(
        self, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
        const uint8_t *value, size_t valuelen,
    ):
        found = self.streams.get(frame.hd.stream_id)
        if found is None:
            return 0
        cdef H2Stream stream = <H2Stream>found
        if frame.headers.cat != NGHTTP2_HCAT_REQUEST:
            return 0  # request trailers: nothing in them for us
        stream.header_bytes += namelen + valuelen + 32
        if stream.header_bytes > self.max_header_bytes:
            stream._refuse(
                _RESOURCE_EXHAUSTED,
                f"request metadata is over the server's limit of {self.max_header_bytes} bytes",
            )
            return 0
        cdef double timeout
        if namelen > 0 and name[0] == 58:  # ':' pseudo-header
            if _is(name, namelen, b":path", 5):
                stream.path = PyBytes_FromStringAndSize(<const char*>value, valuelen)
            elif _is(name, namelen, b":method", 7):
                stream.is_post = _is(value, valuelen, b"POST", 4)
            return 0
        if _is(name, namelen, b"content-type", 12):
            stream.is_grpc = valuelen >= 16 and memcmp(value, b"application/grpc", 16) == 0
        elif _is(name, namelen, b"grpc-timeout", 12):
            timeout = _parse_timeout(value, valuelen)
            if timeout < 0:
                stream._refuse(_INTERNAL, "malformed grpc-timeout header")
            else:
                stream.deadline = _now() + timeout
        elif _is(name, namelen, b"grpc-encoding", 13):
            stream.encoding = (<const char*>value)[:valuelen].decode("latin-1")
        elif (
            _is(name, namelen, b"te", 2)
            or _is(name, namelen, b"user-agent", 10)
            or _is(name, namelen, b"grpc-accept-encoding", 20)
        ):
            pass
        else:
            stream.metadata.append(
                ((<const char*>name)[:namelen].decode("latin-1"),
                 (<const char*>value)[:valuelen].decode("latin-1"))
            )
        return 0

    cdef int _data(self, int32_t stream_id, const uint8_t *data, size_t length):
        found = self.streams.get(stream_id)
        if found is None:
            return 0
        cdef H2Stream stream = <H2Stream>found
        if stream.error_status or stream.done or stream.route is None:
            return 0  # answered already (or about to be): the rest is dropped
        cdef bytearray prefix = stream.inbuf
        cdef Py_ssize_t size, take
        cdef const uint8_t *p
        cdef uint8_t flag
        cdef bytes message
        # The common case: one whole message in this chunk, nothing buffered.
        if stream.msg is None and not prefix and length >= _FRAME_PREFIX:
            size = _be32(data + 1)
            if <size_t>(size + _FRAME_PREFIX) == length and data[0] == 0 and size <= self.max_message:
                self._message(stream, PyBytes_FromStringAndSize(<const char*>data + 5, size))
                return 0
        # Otherwise each message is copied once, into a bytes object of its
        # declared size made when its 5-byte prefix is complete: no buffer
        # grows chunk by chunk (a 600 KB tensor in 16 KB frames was copied
        # about three times over by the reallocations) and nothing is sliced.
        while length > 0 or stream.msg is not None:
            if stream.msg is None:
                take = min(<Py_ssize_t>length, _FRAME_PREFIX - len(prefix))
                prefix += (<const char*>data)[:take]
                self._account(take)  # held too: the read timeout sees a partial prefix
                data += take
                length -= take
                if len(prefix) < _FRAME_PREFIX:
                    return 0
                p = <const uint8_t*>(<char*>prefix)
                flag = p[0]
                size = _be32(p + 1)
                prefix.clear()
                self._account(-_FRAME_PREFIX)
                if size > self.max_message:
                    stream._refuse(
                        _INVALID_ARGUMENT,
                        f"{stream.route.message_name} is {size} bytes, over the server's limit "
                        f"of {self.max_message} bytes (--grpc-max-input-size)",
                    )
                    self._answer_refusal(stream)
                    return 0
                if self.buffered + size > self.max_buffered:
                    stream._refuse(
                        _RESOURCE_EXHAUSTED,
                        f"unfinished request messages on this connection already hold "
                        f"{self.buffered} bytes, the limit is {self.max_buffered}; retry later",
                    )
                    self._answer_refusal(stream)
                    return 0
                if _buffered_total + size > _buffered_limit:
                    stream._refuse(
                        _RESOURCE_EXHAUSTED,
                        f"unfinished request messages on this server already hold "
                        f"{_buffered_total} bytes, the limit is {_buffered_limit}; retry later",
                    )
                    self._answer_refusal(stream)
                    return 0
                stream.msg = PyBytes_FromStringAndSize(NULL, size)  # filled below, then frozen
                stream.msg_filled = 0
                stream.msg_flag = flag
                self._account(size)
            size = PyBytes_GET_SIZE(stream.msg)
            take = min(<Py_ssize_t>length, size - stream.msg_filled)
            if take:
                memcpy(PyBytes_AS_STRING(stream.msg) + stream.msg_filled, data, take)
                stream.msg_filled += take
                data += take
                length -= take
            if stream.msg_filled < size:
                return 0
            message, stream.msg = stream.msg, None
            self._account(-size)
            if stream.msg_flag == 1:
                message = self._decompress(stream, message)
                if message is None:
                    self._answer_refusal(stream)
                    return 0
            elif stream.msg_flag != 0:
                stream._refuse(_INTERNAL, f"invalid gRPC compressed-flag {stream.msg_flag}")
                self._answer_refusal(stream)
                return 0
            self._message(stream, message)
            if stream.error_status or stream.done:
                return 0
        return 0

    cdef object _decompress(self, H2Stream stream, bytes message):
        encoding = stream.encoding
        if encoding is None or encoding == "identity":
            stream._refuse(_INTERNAL, "compressed message without a grpc-encoding")
            return None
        if encoding not in ("gzip", "deflate"):
            stream._refuse(
                _UNIMPLEMENTED,
                f"grpc-encoding {encoding!r} is not supported (identity, deflate, gzip are)",
            )
            return None
        inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
        try:
            out = inflater.decompress(message, self.max_message + 1)
        except zlib.error as exc:
            stream._refuse(_INTERNAL, f"cannot decompress the {encoding} message: {exc}")
            return None
        if len(out) > self.max_message:
            stream._refuse(
                _INVALID_ARGUMENT,
                f"{stream.route.message_name} is over the server's limit of "
                f"{self.max_message} bytes once decompressed (--grpc-max-input-size)",
            )
            return None
        if not inflater.eof:
            stream._refuse(_INTERNAL, f"the {encoding} message is truncated")
            return None
        return out

    cdef _message(self, H2Stream stream, object message):
        if stream.route.streaming:
            self.ready.append((stream, message))
        elif stream.payload is not None:
            stream._refuse(_UNIMPLEMENTED, "a unary RPC got more than one request message")
            self._answer_refusal(stream)
        else:
            stream.payload = message

    cdef inline void _account(self, Py_ssize_t delta) noexcept:
        global _buffered_total
        self.buffered += delta
        _buffered_total += delta

    cdef _drop_buffer(self, H2Stream stream):
        """Forget a stream's unfinished message (it is answered, reset or gone)."""
        self._account(-len(stream.inbuf))
        stream.inbuf.clear()
        if stream.msg is not None:
            self._account(-PyBytes_GET_SIZE(stream.msg))
            stream.msg = None

    cdef _drop_answers(self, H2Stream stream):
        """A closed stream's answers will never be sent."""
        if stream.inflight:
            self._answered(stream.inflight)
            stream.inflight = 0
        cdef Py_ssize_t held = stream.out_bytes
        if held:
            stream._clear_answers()
            self._taken(held)

    cdef _answer_refusal(self, H2Stream stream):
        self._drop_buffer(stream)
        if stream.done:
            return
        stream.payload = None
        stream._finish(stream.error_status, percent_encode(stream.error_message), None)

    cdef int _frame(self, const nghttp2_frame *frame):
        cdef uint8_t kind = frame.hd.type
        if kind == NGHTTP2_PING:
            if frame.hd.flags & NGHTTP2_FLAG_ACK:
                self.ping_sent = 0
            return 0
        if kind != NGHTTP2_HEADERS and kind != NGHTTP2_DATA:
            return 0
        found = self.streams.get(frame.hd.stream_id)
        if found is None:
            return 0
        cdef H2Stream stream = <H2Stream>found
        if kind == NGHTTP2_HEADERS and frame.headers.cat == NGHTTP2_HCAT_REQUEST:
            self._headers_done(stream)
        if frame.hd.flags & NGHTTP2_FLAG_END_STREAM:
            stream.remote_closed = True
            self._request_done(stream)
        return 0

    cdef _headers_done(self, H2Stream stream):
        if stream.error_status:
            self._answer_refusal(stream)
            return
        if not stream.is_grpc:
            stream._refuse(_INTERNAL, "content-type must be application/grpc")
        elif not stream.is_post:
            stream._refuse(_UNIMPLEMENTED, "gRPC calls are POST requests")
        else:
            route = self.routes.get(stream.path)
            if route is None:
                path = (stream.path or b"").decode("latin-1")
                stream._refuse(_UNIMPLEMENTED, f"unknown method {path}")
            else:
                stream.route = <Route>route
                return
        self._answer_refusal(stream)

    cdef _request_done(self, H2Stream stream):
        if stream.done or stream.error_status or stream.route is None:
            return
        if stream.inbuf or stream.msg is not None:
            stream._refuse(_INTERNAL, "the request ended inside a gRPC message")
            self._answer_refusal(stream)
        elif stream.route.streaming:
            self.ready.append((stream, None))
        elif stream.payload is None:
            stream._refuse(_UNIMPLEMENTED, "a unary RPC got no request message")
            self._answer_refusal(stream)
        else:
            self.ready.append((stream, None))

    cdef _stream_closed(self, int32_t stream_id):
        found = self.streams.pop(stream_id, None)
        if found is not None:
            self._close_stream(<H2Stream>found)
        if self.goaway_sent and not self.streams and self.transport is not None:
            self._want_flush()

    cdef _close_stream(self, H2Stream stream):
        stream.closed = True
        self._drop_buffer(stream)
        self._drop_answers(stream)
        cdef Route route = stream.route
        if route is not None and route.abandoned is not None:
            if not stream.done:
                try:
                    route.abandoned(stream)
                except Exception:
                    pass  # the stream is gone either way
            # What it held for `abandoned` (the request, whose answer's context
            # is this stream): a cycle, left to the cyclic GC, would outlive it.
            stream.user = None


cdef list _status_nv(H2Stream stream, nghttp2_nv *nva, size_t *count):
    """grpc-status, grpc-message and trailing metadata; returns the bytes to keep alive."""
    keep = [str(stream.status).encode("ascii")]
    _static_nv(&nva[0], b"grpc-status", b"0")
    if stream.status != 0:
        _bytes_nv(&nva[0], b"grpc-status", keep[0])
    cdef size_t n = 1
    if stream.status_message:
        keep.append(stream.status_message)
        _bytes_nv(&nva[1], b"grpc-message", stream.status_message)
        n = 2
    if stream.trailers:
        for name, value in stream.trailers[:_MAX_TRAILERS]:
            key = str(name).lower().encode("latin-1")
            val = str(value).encode("latin-1")
            keep.append(key)
            keep.append(val)
            _bytes_nv(&nva[n], key, val)
            n += 1
    count[0] = n
    return keep


include "_h2_callbacks.pxi"
