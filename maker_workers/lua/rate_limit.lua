-- rate_limit.lua: charge one provider's shared limits (requests and tokens, GCRA), atomically.
--
-- KEYS[1] requests  STRING  theoretical arrival time (microseconds) once every booked request has drained
-- KEYS[2] tokens    STRING  the same for booked tokens
--
-- ARGV[1] requests to charge: 1 books a request, -1 gives back a booked one never sent, 0 settles tokens only
-- ARGV[2] tokens to charge; negative credits back tokens a request did not use
-- ARGV[3] max_ahead: microseconds; a request is booked only if its slot is at most this far off.
--         Negative: a correction (settle, release), applied at once whatever the slot.
-- ARGV[4] microseconds per request at the steady rate; 0 when requests are not limited (KEYS[1] untouched)
-- ARGV[5] request burst as microseconds of the request rate (burst * ARGV[4])
-- ARGV[6] microseconds per token at the steady rate, may be fractional; 0 when tokens are not limited
-- ARGV[7] token burst as microseconds of the token rate
--
-- Returns {booked, wait}: booked 1 and the microseconds until the slot, or booked 0 (nothing charged) and
-- the microseconds until the slot would be within max_ahead. A correction returns {1, 0}.
--
-- A charge bigger than its burst goes alone once its bucket is empty, so no request waits forever.
-- Time comes from Redis, so workers on many machines share one clock.

redis.replicate_commands()
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local requests = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local max_ahead = tonumber(ARGV[3])

local buckets = {}
local function add(key, per_unit, units, burst)
    if per_unit > 0 then
        local tat = tonumber(redis.call('GET', key) or now)
        if tat < now then tat = now end
        local cost = math.ceil(units * per_unit)
        buckets[#buckets + 1] = {key = key, tat = tat, cost = cost, slot = tat - math.max(burst - cost, 0)}
    end
end
add(KEYS[1], tonumber(ARGV[4]), requests, tonumber(ARGV[5]))
add(KEYS[2], tonumber(ARGV[6]), tokens, tonumber(ARGV[7]))

local slot = now
if max_ahead >= 0 then
    for _, bucket in ipairs(buckets) do
        if bucket.slot > slot then slot = bucket.slot end
    end
    if slot - now > max_ahead then
        return {0, slot - now - max_ahead}
    end
end

for _, bucket in ipairs(buckets) do
    -- Charged from the slot when the other bucket holds the request past this one's own slot.
    local tat = math.max(bucket.tat, slot) + bucket.cost
    if tat > now then
        redis.call('SET', bucket.key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
    else
        redis.call('DEL', bucket.key)
    end
end
return {1, slot - now}
