# nghttp2's C callbacks for _grpc_h2.pyx (included at its end): each
# hands over to the H2Connection in user_data, or to the H2Stream answering.

# -- nghttp2 callbacks (user_data is the H2Connection) ---------------------------

cdef ssize_t _read_body(
    nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
    uint32_t *data_flags, nghttp2_data_source *source, void *user_data,
) noexcept:
    cdef H2Stream stream = <H2Stream>source.ptr
    cdef Py_ssize_t n = 0
    cdef nghttp2_nv nva[2 + _MAX_TRAILERS]
    cdef size_t count
    if stream.out_bytes > 0:
        try:
            n = stream._take_answers(buf, <Py_ssize_t>length)
            stream.conn._taken(n)
        except Exception:
            return NGHTTP2_ERR_CALLBACK_FAILURE
        if stream.out_bytes:
            return n
    if stream.done:
        data_flags[0] |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM
        try:
            keep = _status_nv(stream, nva, &count)
            nghttp2_submit_trailer(session, stream_id, nva, count)
            del keep
        except Exception:
            return NGHTTP2_ERR_CALLBACK_FAILURE
        return n
    if n == 0:
        stream.deferred = True
        return NGHTTP2_ERR_DEFERRED
    return n


cdef int _on_begin_headers(
    nghttp2_session *session, const nghttp2_frame *frame, void *user_data
) noexcept:
    try:
        return (<H2Connection>user_data)._begin_headers(frame)
    except Exception:
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _on_header(
    nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
    size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data,
) noexcept:
    try:
        return (<H2Connection>user_data)._header(frame, name, namelen, value, valuelen)
    except Exception:
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE  # resets this stream only


cdef int _on_frame_recv(
    nghttp2_session *session, const nghttp2_frame *frame, void *user_data
) noexcept:
    try:
        return (<H2Connection>user_data)._frame(frame)
    except Exception:
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _on_data_chunk(
    nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
    size_t length, void *user_data,
) noexcept:
    cdef H2Connection conn = <H2Connection>user_data
    # Flow control is ours (no automatic WINDOW_UPDATE): the stream's window
    # reopens at once, the connection's unless its answers are backed up.
    nghttp2_session_consume_stream(session, stream_id, length)
    if conn.holding:
        conn.held += length
    else:
        nghttp2_session_consume_connection(session, length)
    try:
        return conn._data(stream_id, data, length)
    except Exception:
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _on_stream_close(
    nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data
) noexcept:
    try:
        (<H2Connection>user_data)._stream_closed(stream_id)
    except Exception:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef void _init_callbacks() noexcept:
    global _callbacks
    nghttp2_session_callbacks_new(&_callbacks)
    nghttp2_session_callbacks_set_on_begin_headers_callback(_callbacks, _on_begin_headers)
    nghttp2_session_callbacks_set_on_header_callback(_callbacks, _on_header)
    nghttp2_session_callbacks_set_on_frame_recv_callback(_callbacks, _on_frame_recv)
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(_callbacks, _on_data_chunk)
    nghttp2_session_callbacks_set_on_stream_close_callback(_callbacks, _on_stream_close)


_init_callbacks()
