-- commit_step.lua: commit one decided step to the run's checkpoint and answer log, exactly once.
--
-- A commit whose reply was lost may be sent again; the checkpoint's step says whether it already
-- happened, so the answer log never holds a step twice.
--
-- KEYS[1] checkpoint HASH  step (the next step to decide), state (JSON), previous (JSON answer)
-- KEYS[2] answers    LIST  every committed step's winning answer, in order
--
-- ARGV[1] the step being committed   ARGV[2] the state it produced   ARGV[3] its winning answer
--
-- Returns the checkpoint's step after the call: ARGV[1] + 1 when committed now or before;
-- anything else means the checkpoint is elsewhere (another orchestrator drives this run).

local step = tonumber(ARGV[1])
local at = tonumber(redis.call('HGET', KEYS[1], 'step') or 0)
if at ~= step then return at end
redis.call('HSET', KEYS[1], 'step', step + 1, 'state', ARGV[2], 'previous', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[3])
return step + 1
