-- record_sample.lua: record one sample's outcome for one (step, input) contest, atomically.
--
-- KEYS[1] seen    SET   sample ids already recorded for this contest (Celery may deliver twice)
-- KEYS[2] tally   HASH  candidate -> counted votes
-- KEYS[3] status  HASH  decided, winner, winner_votes, runner_up_votes, samples, votes, red_flags,
--                       errors, late
-- KEYS[4] notify  LIST  the orchestrator BLPOPs one JSON outcome per recorded sample (with the leading
--                       candidate after a vote, so it can speculate on it)
-- KEYS[5] events  STREAM every vote, red flag, error, late vote and decision of the run
-- KEYS[6] stats   HASH  run-wide counters
--
-- ARGV[1] sample id
-- ARGV[2] kind: "vote" | "red_flag" | "error"
-- ARGV[3] value: the candidate (canonical payload) for a vote; the reason otherwise
-- ARGV[4] k, the margin a candidate needs over the runner-up
-- ARGV[5] step index      ARGV[6] input hash (state and previous move)
-- ARGV[7] input tokens    ARGV[8] output tokens
-- ARGV[9] events stream max length (approximate)
-- ARGV[10] seconds a contest's keys live after its first sample: dropped guesses and stragglers
--          must not leak, and every sample arrives long before (the orchestrator replaces lost ones)
--
-- Returns {outcome, leader_votes, runner_up_votes} where outcome is one of
-- "duplicate", "late", "vote", "decided", "red_flag", "error".

local sample_id, kind, value = ARGV[1], ARGV[2], ARGV[3]
local k = tonumber(ARGV[4])
local step, input_hash = tonumber(ARGV[5]), ARGV[6]
local input_tokens, output_tokens = tonumber(ARGV[7]), tonumber(ARGV[8])
local maxlen, ttl = ARGV[9], tonumber(ARGV[10])

local function event(fields)
  local args = {KEYS[5], 'MAXLEN', '~', maxlen, '*', 'step', step, 'input', input_hash, 'sample', sample_id}
  for _, f in ipairs(fields) do table.insert(args, f) end
  redis.call('XADD', unpack(args))
end

if redis.call('SADD', KEYS[1], sample_id) == 0 then
  redis.call('HINCRBY', KEYS[6], 'duplicates', 1)
  event({'kind', 'duplicate'})
  return {'duplicate', 0, 0}
end

redis.call('HINCRBY', KEYS[6], 'samples', 1)
redis.call('HINCRBY', KEYS[6], 'input_tokens', input_tokens)
redis.call('HINCRBY', KEYS[6], 'output_tokens', output_tokens)
redis.call('HINCRBY', KEYS[3], 'samples', 1)

local decided = redis.call('HGET', KEYS[3], 'decided') == '1'
local outcome
local leader, leader_votes, runner_up_votes = nil, 0, 0

if kind == 'red_flag' then
  outcome = 'red_flag'
  redis.call('HINCRBY', KEYS[3], 'red_flags', 1)
  redis.call('HINCRBY', KEYS[6], 'red_flags', 1)
  redis.call('HINCRBY', KEYS[6], 'red_flag:' .. value, 1)
  event({'kind', 'red_flag', 'reason', value})
elseif kind == 'error' then
  outcome = 'error'
  redis.call('HINCRBY', KEYS[3], 'errors', 1)
  redis.call('HINCRBY', KEYS[6], 'errors', 1)
  event({'kind', 'error', 'reason', value})
elseif decided then
  outcome = 'late'
  redis.call('HINCRBY', KEYS[3], 'late', 1)
  redis.call('HINCRBY', KEYS[6], 'late_votes', 1)
  event({'kind', 'late', 'candidate', value})
else
  redis.call('HINCRBY', KEYS[2], value, 1)
  redis.call('HINCRBY', KEYS[3], 'votes', 1)
  redis.call('HINCRBY', KEYS[6], 'votes', 1)
  local tally = redis.call('HGETALL', KEYS[2])
  for i = 1, #tally, 2 do
    local n = tonumber(tally[i + 1])
    if n > leader_votes then
      runner_up_votes = leader_votes
      leader_votes, leader = n, tally[i]
    elseif n > runner_up_votes then
      runner_up_votes = n
    end
  end
  event({'kind', 'vote', 'candidate', value})
  if leader_votes >= k + runner_up_votes then
    outcome = 'decided'
    redis.call('HSET', KEYS[3], 'decided', '1', 'winner', leader,
      'winner_votes', leader_votes, 'runner_up_votes', runner_up_votes)
    redis.call('HINCRBY', KEYS[6], 'decisions', 1)
    event({'kind', 'decided', 'candidate', leader, 'votes', leader_votes, 'runner_up', runner_up_votes})
  else
    outcome = 'vote'
  end
end

for i = 1, 3 do
  if redis.call('TTL', KEYS[i]) == -1 then redis.call('EXPIRE', KEYS[i], ttl) end
end

local status = redis.call('HGETALL', KEYS[3])
local msg = {sample_id = sample_id, step = step, input_hash = input_hash, outcome = outcome,
  leader_votes = leader_votes, runner_up_votes = runner_up_votes}
for i = 1, #status, 2 do
  local f = status[i]
  if f == 'samples' or f == 'red_flags' or f == 'errors' or f == 'votes' then
    msg[f] = tonumber(status[i + 1])
  end
end
if leader then msg.leader = leader end
if outcome == 'decided' then msg.winner = leader end
if outcome == 'red_flag' or outcome == 'error' then msg.reason = value end
redis.call('RPUSH', KEYS[4], cjson.encode(msg))
return {outcome, leader_votes, runner_up_votes}
