-- rate_limit.lua: reserve one request against a provider's shared rate (GCRA), atomically.
--
-- KEYS[1] bucket  STRING  the theoretical arrival time (microseconds) of the next free slot
--
-- ARGV[1] microseconds between requests at the steady rate (1e6 / requests per second)
-- ARGV[2] burst: how many requests may go at once after a quiet spell
--
-- Returns the microseconds the caller must wait before sending; the slot is reserved either way,
-- so a caller never asks twice. Time comes from Redis, so workers on many machines share one clock.

redis.replicate_commands()
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])

local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - (burst - 1) * interval - now
if wait < 0 then wait = 0 end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return wait
