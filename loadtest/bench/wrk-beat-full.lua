-- Full-JSON beats for 1,000 instances across 10 services, as the Python client sends them
-- (the beat JSON with 3 metadata keys, in the query string). Register the instances first:
--   python3 loadtest/bench/wrk-beat-full-register.py http://HOST:PORT
--   wrk -t1 -c32 -d10s -s loadtest/bench/wrk-beat-full.lua http://HOST:PORT
local n = 0
local function enc(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end
request = function()
  n = n + 1
  local i = n % 1000
  local svc = "wsvc" .. (i % 10)
  local ip = "10.0." .. math.floor(i / 256) .. "." .. (i % 256)
  local beat = '{"port":8080,"ip":"' .. ip .. '","weight":1.0,"serviceName":"DEFAULT_GROUP@@' .. svc ..
    '","cluster":"DEFAULT","metadata":{"version":"1.0.3","zone":"zone-a","management.port":"8081"},"scheduled":false,"period":5000,"stopped":false}'
  local path = "/nacos/v1/ns/instance/beat?serviceName=" .. svc .. "&groupName=DEFAULT_GROUP&namespaceId=public&beat=" .. enc(beat)
  return wrk.format("PUT", path)
end
