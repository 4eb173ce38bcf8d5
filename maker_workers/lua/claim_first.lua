-- Claims a contest's one draw at the first temperature (T=0) for a sample, before the model is called.
--
-- KEYS[1] first   STRING the sample id holding the claim
-- KEYS[2] status  HASH   the contest's status: the claim lives as long as it does
--
-- ARGV[1] sample id
-- ARGV[2] the contest's TTL in seconds, for a claim made before the contest has any status
--
-- Returns 1 when the sample holds the claim (now, or already: Celery delivered it twice), else 0.
-- The claim expires with the contest's other keys: set to the status's TTL, never the whole contest TTL
-- when the status has less left (a sample of a committed step, or of a dropped guess, would otherwise leave
-- a claim behind for an hour, and a guess opened again would find it without the votes).

local holder = redis.call('GET', KEYS[1])
if holder then
  return holder == ARGV[1] and 1 or 0
end
local left = redis.call('TTL', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', left > 0 and left or tonumber(ARGV[2]))
return 1
