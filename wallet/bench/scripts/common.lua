-- Shared by every bench script: a send deadline, per-thread counts, one JSON result line.
--
-- Arguments (after `--` on wrk's command line, as key=value): active=<seconds to send for>;
-- keys=<prefix> gives every request a unique X-Request-ID, <prefix>-<thread>-<n> (see with_key).
-- After the deadline delay() holds every connection back, so the requests in flight complete
-- and none is abandoned when wrk's own (longer) -d ends. A script that requires this module
-- may define configure(opts) to read its own options; it runs inside init().

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local HOLD_MS = 1e9 -- "never" for the rest of the run

-- main state: the threads, collected by setup() for done()
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

-- thread state
ok, not200, sent = 0, 0, 0
t_start, t_last = 0, 0
local deadline = 0
local key_prefix, key_n = nil, 0

-- Sets a fresh X-Request-ID in `headers` when the run is keyed (keys=<prefix>); returns them.
function with_key(headers)
  if key_prefix then
    key_n = key_n + 1
    headers["X-Request-ID"] = key_prefix .. "-" .. tid .. "-" .. key_n
  end
  return headers
end

function init(args)
  local opts = {}
  for _, arg in ipairs(args) do
    local key, value = arg:match("^([%w_]+)=(.*)$")
    if key then opts[key] = value end
  end
  math.randomseed(tid * 1000003 + os.time())
  -- auth=<credential>: sent as a bearer token (scripts with their own headers copy it from here)
  if opts.auth then wrk.headers["Authorization"] = "Bearer " .. opts.auth end
  if opts.keys and opts.keys ~= "" then key_prefix = opts.keys end
  if configure then configure(opts) end
  t_start = now()
  deadline = t_start + tonumber(opts.active or "10")
end

function delay()
  if now() >= deadline then return HOLD_MS end
  sent = sent + 1
  return 0
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else not200 = not200 + 1 end
  t_last = now()
end

function done(summary, latency, requests)
  local n_ok, n_bad, n_sent, first, last = 0, 0, 0, math.huge, 0
  for _, thread in ipairs(threads) do
    n_ok = n_ok + thread:get("ok")
    n_bad = n_bad + thread:get("not200")
    n_sent = n_sent + thread:get("sent")
    first = math.min(first, thread:get("t_start"))
    last = math.max(last, thread:get("t_last"))
  end
  local active = 0
  if last > first then active = last - first end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"ok":%d,"not200":%d,"sent":%d,"responses":%d,"active_s":%.6f,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    n_ok, n_bad, n_sent, summary.requests, active,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.status, e.timeout))
end
