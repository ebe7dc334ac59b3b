-- wrk script of the HTTP benchmark (bench/http.py): POST /orders with an Idempotency-Key.
--
--   wrk ... -s bench/http_keys.lua http://127.0.0.1:PORT -- MODE PREFIX
--
-- MODE "fresh": every request carries a key never used before (PREFIX-thread-counter);
-- MODE "replay": every request carries the key PREFIX-replay (completed before the run).
-- done() prints one JSON line with counts, status codes and latency percentiles (µs).

local threads = {}
local counter = 0
local mode = "fresh"
local prefix = "k"
statuses = {}
local body = '{"amount": 1000, "currency": "EUR"}'

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "fresh"
  prefix = args[2] or "k"
end

function request()
  counter = counter + 1
  local key
  if mode == "replay" then
    key = prefix .. "-replay"
  else
    key = prefix .. "-" .. id .. "-" .. counter
  end
  return wrk.format("POST", "/orders",
    {["Idempotency-Key"] = key, ["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses") or {}
    for code, n in pairs(s) do
      merged[code] = (merged[code] or 0) + n
    end
  end
  local parts = {}
  for code, n in pairs(merged) do
    table.insert(parts, string.format('"%d": %d', code, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"socket_errors": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ", ")))
end
