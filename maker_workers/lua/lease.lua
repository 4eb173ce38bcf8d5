-- lease.lua: one orchestrator per run. Take, renew or release the run's lease, atomically, and fence it.
--
-- KEYS[1] lease  STRING  who drives the run ("host pid N #token"), expiring unless renewed
-- KEYS[2] meta   HASH    the run's `lease_gen` (how many orchestrators have taken the run) and `lease_holder`
--
-- ARGV[1] the caller's holder string   ARGV[2] milliseconds the lease lasts   ARGV[3] "hold" | "release"
-- ARGV[4] the generation the caller holds, "" when it is starting (it takes a new generation)
--
-- "hold" returns {holder, generation}. The caller's own lease is renewed. A free lease is taken by a caller that
-- is starting (a new generation: every run-level write of an older one is refused from then on, lua/fenced.lua),
-- or by one going on with the generation still current (its lease lapsed while nobody took the run); a caller
-- whose generation has passed, or who finds another holding it, gets {holder or "", current generation} back
-- and nothing changes. "release" frees the caller's own lease.

local current = redis.call('GET', KEYS[1])
if ARGV[3] == 'release' then
  if current == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return {ARGV[1], 0}
end
local generation = tonumber(redis.call('HGET', KEYS[2], 'lease_gen') or 0)
if current and current ~= ARGV[1] then return {current, generation} end
if not current then
  if ARGV[4] == '' then
    generation = redis.call('HINCRBY', KEYS[2], 'lease_gen', 1)
    redis.call('HSET', KEYS[2], 'lease_holder', ARGV[1])
  elseif tonumber(ARGV[4]) ~= generation then
    return {'', generation}
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {ARGV[1], generation}
