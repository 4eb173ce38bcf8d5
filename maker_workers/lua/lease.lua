-- lease.lua: one orchestrator per run. Take or renew the run's lease, or release it, atomically.
--
-- KEYS[1] lease  STRING  who drives the run ("host pid N #token"), expiring unless renewed
--
-- ARGV[1] the caller's holder string   ARGV[2] milliseconds the lease lasts   ARGV[3] "hold" | "release"
--
-- "hold" takes a free (or expired) lease or renews the caller's own, and returns the caller; when
-- another holds it, nothing changes and the holder is returned. "release" frees the caller's own lease.

local current = redis.call('GET', KEYS[1])
if ARGV[3] == 'release' then
  if current == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return ARGV[1]
end
if current and current ~= ARGV[1] then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
