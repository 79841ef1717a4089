-- One kind of soak traffic for wrk (bench/soak.sh runs one wrk, one thread, per kind).
--
-- Environment (read by wrk's main state and by its thread):
--   SOAK_REQUESTS  file of requests, one a line: PATH<TAB>BODY (POSTed as JSON, taken in turn)
--   SOAK_PROGRESS  file rewritten with the number of answers so far (every 200 answers, and each second)
--   SOAK_DELAY_MS  pause of each connection between an answer and its next request (default 0)
--
-- At the end (wrk's done, also after SIGINT) it prints, for soak.sh to parse:
--   SOAK status CODE COUNT      one line per HTTP status received
--   SOAK cache hit|miss COUNT   answers carrying X-Cache
--   SOAK errors CONNECT READ WRITE TIMEOUT   wrk's socket errors (these never reach response())

local delay_ms = tonumber(os.getenv("SOAK_DELAY_MS") or "0") or 0
local progress = os.getenv("SOAK_PROGRESS")
local requests, n, answers, last_write = {}, 0, 0, 0

-- Read in the thread (and in the main state, harmlessly).
for line in io.lines(os.getenv("SOAK_REQUESTS")) do
  local path, body = line:match("^(%S+)\t(.*)$")
  if path then
    requests[#requests + 1] = wrk.format("POST", path, { ["Content-Type"] = "application/json" }, body)
  end
end
assert(#requests > 0, "no requests in " .. tostring(os.getenv("SOAK_REQUESTS")))

statuses = {} -- status -> count; globals, read by done() through thread:get
cache = { hit = 0, miss = 0 }

local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

function request()
  n = n % #requests + 1
  return requests[n]
end

-- Only defined when asked for: with a delay() at all, wrk routes every request through a timer.
if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  answers = answers + 1
  local x_cache = headers["x-cache"] or headers["X-Cache"]
  if x_cache == "hit" or x_cache == "miss" then
    cache[x_cache] = cache[x_cache] + 1
  end
  local now = os.time()
  if progress and (now ~= last_write or answers % 200 == 0) then
    last_write = now
    -- Written aside and renamed, so soak.sh never reads a half-written file.
    local f = io.open(progress .. ".tmp", "w")
    if f then
      f:write(answers, "\n")
      f:close()
      os.rename(progress .. ".tmp", progress)
    end
  end
end

function done(summary, latency, reqs)
  local total = {}
  local hits, misses = 0, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      total[status] = (total[status] or 0) + count
    end
    local c = thread:get("cache") or {}
    hits = hits + (c.hit or 0)
    misses = misses + (c.miss or 0)
  end
  for status, count in pairs(total) do
    io.write(string.format("SOAK status %d %d\n", status, count))
  end
  io.write(string.format("SOAK cache hit %d\nSOAK cache miss %d\n", hits, misses))
  local e = summary.errors
  io.write(string.format("SOAK errors %d %d %d %d\n", e.connect, e.read, e.write, e.timeout))
  io.write(string.format("SOAK latency_us p50 %d p99 %d max %d\n",
    latency:percentile(50), latency:percentile(99), latency.max))
end
