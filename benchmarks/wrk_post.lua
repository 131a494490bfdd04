-- wrk script: POST a fixed body (JSON, or binary tensor data) and report results machine-readably.
--
-- The body is read from the file named by the WRK_BODY_FILE environment variable (every wrk
-- thread runs this file in its own Lua state, so each reads it once at start-up).
-- done() prints one line:  WRK_RESULT {json}
-- latencies are in microseconds, duration_us is the measured wall time of the run.

local path = os.getenv("WRK_BODY_FILE")
if not path then
   error("WRK_BODY_FILE is not set")
end
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
-- WRK_HEADER_LENGTH set: the body is binary tensor data after a JSON header of that many bytes
local header_length = os.getenv("WRK_HEADER_LENGTH")
if header_length then
   wrk.headers["Content-Type"] = "application/octet-stream"
   wrk.headers["Inference-Header-Content-Length"] = header_length
else
   wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.2f,"stdev":%.2f,"max":%d,' ..
      '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
