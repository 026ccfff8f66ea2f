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
end
