-- wrk script: walks jobs through queued -> started -> complete, form-encoded byte for byte as
-- the original Faraday middleware sends them (keys sorted, arguments as JSON).
--
--   wrk -t2 -c32 -d15s --latency -s benchmarks/lifecycle.lua http://127.0.0.1:8000 -- <prefix>
--
-- jids are <prefix><thread number, 4 hex><job number, 12 hex>, so they are unique across wrk
-- threads and, with a random prefix per run, across runs (no upserts onto old rows).
-- A thread's consecutive requests go out on different connections, so one job's events may
-- arrive concurrently or out of order: the ledger merge has to absorb that, as in production.
-- done() prints one line, `wrk-json {...}`, with exact counts and latencies in microseconds.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  -- A global in the thread's own Lua state (a top-level `local` would shadow it).
  thread:set("thread_number", #threads)
end

local prefix = "00000000"
local counter = 0

function init(args)
  if args[1] then prefix = args[1] end
end

local ARGS = "arguments=%5B42%2C%22h%C3%A9llo+%26+co%22%2C%7B%22id%22%3A7%7D%5D"
local REST = "&job_class=HardJob&queue=default"
local HEADERS = {
  ["Content-Type"] = "application/x-www-form-urlencoded",
  ["User-Agent"] = "Faraday v1.1.0",
}

function request()
  local job = math.floor(counter / 3)
  local step = counter % 3
  counter = counter + 1
  local jid = string.format("%s%04x%012x", prefix, thread_number, job)
  if step == 0 then
    return wrk.format("POST", "/api/v1/jobs", HEADERS, ARGS .. REST .. "&job_id=" .. jid)
  elseif step == 1 then
    return wrk.format("POST", "/api/v1/jobs/" .. jid .. "/started", HEADERS, ARGS .. REST)
  end
  return wrk.format("POST", "/api/v1/jobs/" .. jid .. "/complete", HEADERS, ARGS .. REST)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'wrk-json {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    latency.mean))
end
