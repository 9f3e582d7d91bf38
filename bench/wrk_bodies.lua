-- wrk script: POST precomputed bodies, each once, from every connection of one thread.
-- Arguments (after --): bodies file, index file ("offset length" per line), request path,
-- then "Name: value" header lines. bench/loadgen.py writes the files and reads the JSON
-- that done() prints. Bodies are read before the clock starts, so wrk does no work per
-- request beyond sending bytes.
local bodies = {}
local path = "/"
local headers = {}
local next_body = 1
wrapped = 0

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local blob = file:read("*a")
  file:close()
  for line in io.lines(args[2]) do
    local offset, length = line:match("^(%d+) (%d+)$")
    offset, length = tonumber(offset), tonumber(length)
    bodies[#bodies + 1] = blob:sub(offset + 1, offset + length)
  end
  path = args[3]
  for i = 4, #args do
    local name, value = args[i]:match("^([^:]+): (.*)$")
    headers[name] = value
  end
end

function request()
  local body = bodies[next_body]
  next_body = next_body + 1
  if next_body > #bodies then
    -- Out of unique bodies: the rest repeat (the store deduplicates them). The runner
    -- reports it, and sizes the bodies so that it should not happen.
    next_body = 1
    wrapped = wrapped + 1
  end
  return wrk.format("POST", path, headers, body)
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local wraps = 0
  for _, thread in ipairs(threads) do
    wraps = wraps + (thread:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status_errors": %d, "timeouts": %d, "wrapped": %d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout, wraps))
end
