-- wrk: POST the same body on every request (benchmarks/load/drivers.py).
-- BODY: file with the request body; CONTENT_TYPE; HEADER_LENGTH: the JSON
-- header's length for Triton's binary tensor extension (optional).
local file = assert(io.open(os.getenv("BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE")
local header_length = os.getenv("HEADER_LENGTH")
if header_length then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end
