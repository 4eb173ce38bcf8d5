-- commit_step.lua: commit one decided step to the run's checkpoint and answer log, exactly once.
--
-- A commit whose reply was lost may be sent again; the checkpoint's step says whether it already
-- happened, so the answer log never holds a step twice.
--
-- KEYS[1] checkpoint HASH  step (the next step to decide), state (JSON), previous (JSON answer)
-- KEYS[2] answers    LIST  every committed step's winning answer, in order
-- KEYS[3] voters     HASH  the committed contest's votes by model ("<model> <vote key>"; ensembles only)
-- KEYS[4] stats      HASH  run-wide counters: each model's `model:<label>:winning_votes` grows here
-- KEYS[5..9] the contest's seen set, tally, payloads, first-sample claim and candidate vectors (semantic
--            contests), and KEYS[11] its texts: not needed once committed (the answer log holds the result), so
--            they go now, unless ARGV[5] is "keep".
-- KEYS[10]   the contest's status hash: it lingers ARGV[8] seconds (unless "keep"), so that a sample landing
--            later finds the step decided and is recorded as late; then it goes too.
-- KEYS[12]   the run's meta: a commit by an orchestrator whose lease generation (ARGV[9]) has passed is refused
--
-- ARGV[1] the step being committed   ARGV[2] the state it produced   ARGV[3] its winning answer
-- ARGV[4] the winning vote key     ARGV[5] "keep" to keep the contest's keys (a one-step vote reads its tally)
-- ARGV[6] the rounds of samples the step took: added to the stats' `rounds`, and `max_rounds` kept (maker watch)
-- ARGV[7] the samples the committed contest counted: added to the stats' `committed_samples`; every other
--         sample (a losing guess's, one landing after its step was decided) is what speculation wasted
-- ARGV[8] seconds the status hash lingers after the commit
-- ARGV[9] the committing orchestrator's lease generation ("" to skip the check)
--
-- Returns the checkpoint's step after the call: ARGV[1] + 1 when committed now or before;
-- anything else means the checkpoint is elsewhere (another orchestrator drives this run); -1 when the
-- orchestrator's lease generation has passed (nothing written).

if ARGV[9] and ARGV[9] ~= '' and tonumber(redis.call('HGET', KEYS[12], 'lease_gen') or 0) ~= tonumber(ARGV[9]) then
  return -1
end
local step = tonumber(ARGV[1])
local at = tonumber(redis.call('HGET', KEYS[1], 'step') or 0)
if at ~= step then return at end
redis.call('HSET', KEYS[1], 'step', step + 1, 'state', ARGV[2], 'previous', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[3])
local rounds = tonumber(ARGV[6] or 0)
if rounds > 0 then
  redis.call('HINCRBY', KEYS[4], 'rounds', rounds)
  if rounds > tonumber(redis.call('HGET', KEYS[4], 'max_rounds') or 0) then
    redis.call('HSET', KEYS[4], 'max_rounds', rounds)
  end
end
local samples = tonumber(ARGV[7] or 0)
if samples > 0 then redis.call('HINCRBY', KEYS[4], 'committed_samples', samples) end
local voters = redis.call('HGETALL', KEYS[3])
for i = 1, #voters, 2 do
  local at = string.find(voters[i], ' ', 1, true)
  if string.sub(voters[i], at + 1) == ARGV[4] then
    redis.call('HINCRBY', KEYS[4], 'model:' .. string.sub(voters[i], 1, at - 1) .. ':winning_votes', voters[i + 1])
  end
end
if ARGV[5] ~= 'keep' then
  redis.call('DEL', KEYS[3], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[11])
  redis.call('EXPIRE', KEYS[10], tonumber(ARGV[8]))
end
return step + 1
