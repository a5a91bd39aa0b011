-- wrk script: each connection walks jobs through queued -> started -> complete, form-encoded
-- byte for byte as the seed's Faraday middleware sends them (keys sorted, arguments as JSON).
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

local ARGS = "arguments=%5B42%2C%22h%C3%A9llo+%26+co%22%2C%7B%22id%22%3A7%7D%5D"
local REST = "&job_class=HardJob&queue=default"
local HEADERS = {
  ["Content-Type"] = "application/x-www-form-urlencoded",
  ["User-Agent"] = "Faraday v1.1.0",
}

function request()
  counter = counter + 1
  local job = math.floor((counter - 1) / 3)
  local step = (counter - 1) % 3
  local jid = string.format("%08x%016x", thread_id, job)
  if step == 0 then
    return wrk.format("POST", "/api/v1/jobs", HEADERS, ARGS .. REST .. "&job_id=" .. jid)
  elseif step == 1 then
    return wrk.format("POST", "/api/v1/jobs/" .. jid .. "/started", HEADERS, ARGS .. REST)
  else
    return wrk.format("POST", "/api/v1/jobs/" .. jid .. "/complete", HEADERS, ARGS .. REST)
  end
end

local errors = 0
function response(status, headers, body)
  if status ~= 201 then errors = errors + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("non-2xx: %d\n", summary.errors.status))
end
