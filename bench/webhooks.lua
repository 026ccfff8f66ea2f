-- wrk script: POST realistic Drift webhooks of all ten types, every request a new event.
--
-- wrk -s webhooks.lua URL -- TEMPLATES_FILE RUN
--   TEMPLATES_FILE: one webhook body per line (built by workload.py from the fixtures), with
--                   @ID@ where the per-request id goes;
--   RUN:            a small number, different for every run against the same database.
-- The id is RUN, the thread number and a per-thread counter, so no two requests (across
-- threads and runs) carry the same Drift event. done() prints one line:
--   BENCH_RESULT {json}
-- with request counts, wrk's error counts, latency percentiles (microseconds) and how many
-- answers were not "200 accepted" (with a sample of the first one).

local threads = {}

-- Paced mode (open-loop latency at a fixed offered rate): BENCH_WRK_RATE is the rate of one
-- wrk thread in requests/s. Every request of the thread takes the next slot of a fixed
-- schedule (slot k at start + k / rate) and waits for it in wrk's delay() hook, whatever the
-- previous answers took; the latency wrk records runs from the send to the answer. With
-- more connections than requests in flight, the offered rate does not depend on latency.
local pace = tonumber(os.getenv("BENCH_WRK_RATE") or "")
if pace and pace > 0 then
   local ffi = require("ffi")
   ffi.cdef[[
      typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
      int clock_gettime(int clock, bench_timespec *tp);
   ]]
   local clock = ffi.new("bench_timespec")
   local function now_ms()
      ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
      return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
   end
   local interval = 1000 / pace
   local next_slot = nil
   function delay()
      local now = now_ms()
      next_slot = next_slot or now
      local wait = next_slot - now
      next_slot = next_slot + interval
      if wait < 0 then return 0 end
      return math.floor(wait)
   end
end

function setup(thread)
   thread:set("thread_number", #threads)
   table.insert(threads, thread)
end

function init(args)
   templates = {}
   for line in io.lines(args[1]) do
      if #line > 0 then table.insert(templates, line) end
   end
   run = tonumber(args[2] or "1")
   counter = 0
   accepted = 0
   refused = 0
   first_refusal = ""
   headers = {["Content-Type"] = "application/json", ["User-Agent"] = "Drift-Webhooks/1.0"}
end

function request()
   counter = counter + 1
   local template = templates[(counter % #templates) + 1]
   -- RUN (up to 4 digits), thread (2) and counter (9): at most 15 digits, exact in LuaJIT's
   -- doubles (below 2^53); a fixed width after RUN keeps ids of different runs apart.
   local id = string.format("%d%02d%09d", run, thread_number, counter)
   local body = string.gsub(template, "@ID@", id)
   return wrk.format("POST", "/webhooks/drift", headers, body)
end

function response(status, headers, body)
   if status == 200 and string.find(body, '"accepted"', 1, true) then
      accepted = accepted + 1
   else
      refused = refused + 1
      if first_refusal == "" then
         first_refusal = tostring(status) .. " " .. string.sub(body or "", 1, 200)
      end
   end
end

local function json_string(text)
   return '"' .. string.gsub(text, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end) .. '"'
end

function done(summary, latency, requests)
   local accepted_total, refused_total, sample = 0, 0, ""
   for _, thread in ipairs(threads) do
      accepted_total = accepted_total + thread:get("accepted")
      refused_total = refused_total + thread:get("refused")
      local first = thread:get("first_refusal")
      if sample == "" and first ~= "" then sample = first end
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "accepted": %d, ' ..
      '"refused": %d, "first_refusal": %s, "errors": {"connect": %d, "read": %d, ' ..
      '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p90": %d, ' ..
      '"p99": %d, "p999": %d, "max": %d, "mean": %.1f}}\n',
      summary.requests, summary.duration, summary.bytes, accepted_total, refused_total,
      json_string(sample), errors.connect, errors.read, errors.write, errors.status,
      errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean))
   if pace and pace > 0 then
      -- The whole latency histogram (microseconds, count), so repeats can be pooled.
      local pairs_out = {}
      for index = 1, #latency do
         local value, count = latency(index)
         table.insert(pairs_out, string.format("[%d,%d]", value, count))
      end
      io.write("BENCH_HISTOGRAM [" .. table.concat(pairs_out, ",") .. "]\n")
   end
end
