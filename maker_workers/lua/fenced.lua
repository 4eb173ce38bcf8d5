-- fenced.lua: a run-level write by the orchestrator driving the run, refused when its lease's generation has
-- passed (another orchestrator took the run over while it was frozen, cut off or paused).
--
-- KEYS[1] meta  HASH  the run's meta; `lease_gen` is the current generation (lua/lease.lua)
--
-- ARGV[1] the writer's generation   ARGV[2] "hset" | "hsetnx" | "hdel"   ARGV[3..] fields (and values) of meta
--
-- Returns 1 when written, 0 when refused (nothing written).

if tonumber(redis.call('HGET', KEYS[1], 'lease_gen') or 0) ~= tonumber(ARGV[1]) then return 0 end
local args = {}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
if ARGV[2] == 'hset' then
  redis.call('HSET', KEYS[1], unpack(args))
elseif ARGV[2] == 'hsetnx' then
  redis.call('HSETNX', KEYS[1], args[1], args[2])
elseif ARGV[2] == 'hdel' then
  redis.call('HDEL', KEYS[1], unpack(args))
end
return 1
