-- record_sample.lua: record one sample's outcome for one (step, input) contest, atomically.
--
-- The script owns the contest's ranking: the status hash holds the whole snapshot (leader, its votes,
-- the runner-up's votes, the decision and the counters), and every notice carries that snapshot, so the
-- orchestrator replaces its view instead of patching it and never ranks votes itself.
--
-- KEYS[1] seen     SET   sample ids already recorded for this contest (Celery may deliver twice)
-- KEYS[2] tally    HASH  vote key -> counted votes
-- KEYS[3] status   HASH  the snapshot: decided, leader, leader_votes, runner_up_votes, winner,
--                        samples, votes, red_flags, errors, late
-- KEYS[4] payloads HASH  vote key -> its first vote's payload, when that is not the key itself
-- KEYS[5] notify   LIST  the orchestrator BLPOPs one JSON notice per recorded sample
-- KEYS[6] events   STREAM every vote, red flag, error, late vote and decision of the run
--                        (votes and red flags carry their output_tokens: calibration's per-sample lengths)
-- KEYS[7] stats    HASH  run-wide counters, and per model (`model:<label>:<counter>`)
-- KEYS[8] voters   HASH  "<model label> <vote key>" -> counted votes (ensembles only): which model voted for what
-- KEYS[9] first    STRING the sample id that holds the contest's one draw at the first temperature (T=0)
-- KEYS[10] texts   HASH  `d:<digest>` for every completion text counted as a vote, and `c:<vote key>` -> how many
--                        distinct texts voted for that key: a vote whose text is byte-identical to one already
--                        counted is a copy (a model sampled near T=0 repeats itself), which says nothing new
--
-- ARGV[1] sample id
-- ARGV[2] kind: "vote" | "red_flag" | "error"
-- ARGV[3] value: the vote key (canonical) for a vote; the reason otherwise
-- ARGV[4] payload: the answer handed to the next step, or "" when it is the vote key itself
-- ARGV[5] k, the margin a candidate needs over the runner-up, as the sample's sender knew it: the contest's first
--         sample fixes it (status `k`), and every later one is decided at that k, whatever k it carries (an old
--         sample landing in a contest reopened after adaptive k rose, or in a resumed run)
-- ARGV[6] step index      ARGV[7] input hash
-- ARGV[8] input tokens    ARGV[9] output tokens
-- ARGV[10] events stream max length (approximate)
-- ARGV[11] seconds a contest's keys live after its first sample; all of them expire together, so no
--          key of the contest (the seen set above all) can outlive the others
-- ARGV[12] the model that drew the sample ("provider:model"), "" when unknown
-- ARGV[13] what the call cost, in nano-dollars; -1 when the model's price is unknown
-- ARGV[14] "1" to count votes by model in KEYS[8] (an ensemble: the report gives each model's share)
-- ARGV[15] the worker process that drew it (host/pid), "" when unknown: `maker watch` lists who is heard from
-- ARGV[16] "1" when the sample was drawn at the first temperature: having claimed KEYS[9] (lua/claim_first.lua), or
--          in a contest the orchestrator knew fresh, to claim it here
-- ARGV[17] input tokens read from the provider's prompt cache (part of ARGV[8])
-- ARGV[18] a digest of the completion's text ("" for a text too short to tell): a vote whose digest this contest
--          has counted already is a copy (status `copies`, stats `copies`)
-- ARGV[19] an excerpt of the completion's text, kept on the vote's or red flag's event ("" to keep none)
-- ARGV[20] the parser's own reason for a red flag ("" when none), kept on its event as `detail`
-- ARGV[21] the provider call that drew it ("" when none was made): a sample delivered twice (Celery redelivers, the
--          publisher re-sends) is counted once as a vote, but each call the provider served is billed once, so a
--          duplicate's tokens and cost count when its call is new (a retried script call of the same one does not)
-- ARGV[22] input tokens written to the provider's prompt cache (part of ARGV[8]; billed at a premium)
-- ARGV[23..28], KEYS[11]: semantic contests only (answer.match: semantic), see lua/semantic.lua
--
-- A kind "fatal" (the provider refused in a way no retry fixes) counts as an error and is kept in the
-- run's stats as `fatal`, so anyone can see why the run ended.
--
-- Returns {outcome, leader_votes, runner_up_votes, reason} where outcome is one of
-- "duplicate", "late", "vote", "decided", "red_flag", "error", "fatal", and reason is the red flag's or error's
-- (a vote this script red-flags has one too), absent otherwise.

local sample_id, kind, value, payload = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = tonumber(ARGV[5])
local step, input_hash = tonumber(ARGV[6]), ARGV[7]
local input_tokens, output_tokens = tonumber(ARGV[8]), tonumber(ARGV[9])
local maxlen, ttl = ARGV[10], tonumber(ARGV[11])
local model, cost, by_model = ARGV[12], tonumber(ARGV[13]), ARGV[14] == '1'
local worker = ARGV[15] or ''
local cached_tokens, digest, excerpt, detail = tonumber(ARGV[17] or 0), ARGV[18] or '', ARGV[19] or '', ARGV[20] or ''

-- Adds a field to an event's list, unless its value is empty.
local function put(fields, name, value)
  if value ~= '' then
    table.insert(fields, name)
    table.insert(fields, value)
  end
end

-- What the model said, on the events of a vote or red flag: `maker samples` and the report read it there.
local function said(fields)
  put(fields, 'text', excerpt)
  put(fields, 'detail', detail)
  return fields
end

local function event(fields)
  local args = {KEYS[6], 'MAXLEN', '~', maxlen, '*', 'step', step, 'input', input_hash, 'sample', sample_id}
  for _, f in ipairs(fields) do table.insert(args, f) end
  put(args, 'model', model)
  put(args, 'worker', worker)
  if cost >= 0 then
    table.insert(args, 'cost_usd')
    table.insert(args, string.format('%.9f', cost / 1e9))
  end
  redis.call('XADD', unpack(args))
end

-- A run-wide counter, and the same counter of the model that drew the sample; returns the run-wide total.
local function count(name, by)
  local total = redis.call('HINCRBY', KEYS[7], name, by)
  if model ~= '' then redis.call('HINCRBY', KEYS[7], 'model:' .. model .. ':' .. name, by) end
  return total
end

-- What a provider call served: counted once per call, whatever happens to its sample.
local call_id = ARGV[21] or ''
local written_tokens = tonumber(ARGV[22] or 0)
local function bill()
  count('input_tokens', input_tokens)
  if cached_tokens > 0 then count('cached_input_tokens', cached_tokens) end
  if written_tokens > 0 then count('cache_write_input_tokens', written_tokens) end
  count('output_tokens', output_tokens)
  if cost >= 0 then return count('cost_nusd', cost) end
  count('cost_unknown', 1)
  return nil
end

if redis.call('SADD', KEYS[1], sample_id) == 0 then
  redis.call('HINCRBY', KEYS[7], 'duplicates', 1)
  local fields = {'kind', 'duplicate'}
  if call_id ~= '' and redis.call('SADD', KEYS[1], 'call:' .. call_id) == 1 then
    bill()  -- a second call the provider served for the same sample (not this call recorded again): paid for
    redis.call('HINCRBY', KEYS[7], 'duplicate_calls', 1)
    fields = {'kind', 'duplicate', 'output_tokens', output_tokens}
  end
  event(fields)
  return {'duplicate', 0, 0}
end
if call_id ~= '' then redis.call('SADD', KEYS[1], 'call:' .. call_id) end

count('samples', 1)
local spent = bill()
redis.call('HINCRBY', KEYS[3], 'samples', 1)
local fixed = redis.call('HGET', KEYS[3], 'k')
if fixed then k = tonumber(fixed) else redis.call('HSET', KEYS[3], 'k', k) end

local current = redis.call('HMGET', KEYS[3], 'decided', 'leader', 'leader_votes', 'runner_up_votes')
local decided = current[1] == '1'
local leader = current[2] or nil
local leader_votes, runner_up_votes = tonumber(current[3] or 0), tonumber(current[4] or 0)
local outcome
-- A contest counts one vote drawn at the first temperature: at T=0 a model gives the same answer every time, so a
-- second one is the first one again, not a vote. The claim names its sample; one that lost it while in flight (its
-- guess was dropped, the keys expired with the claim, the guess came back and a new sample claimed it) is red-flagged.
if kind == 'vote' and ARGV[16] == '1' then
  local holder = redis.call('GET', KEYS[9])
  if not holder then
    redis.call('SET', KEYS[9], sample_id)  -- its TTL is set with the other keys' below
  elseif holder ~= sample_id then
    kind, value = 'red_flag', 'second_first_sample'
  end
end
-- A semantic contest's script starts with lua/semantic.lua: it assigns the vote to its candidate (or red-flags it).
if ARGV[23] then kind, value = semantic(kind, value, decided) end

if kind == 'red_flag' then
  outcome = 'red_flag'
  redis.call('HINCRBY', KEYS[3], 'red_flags', 1)
  count('red_flags', 1)
  redis.call('HINCRBY', KEYS[7], 'red_flag:' .. value, 1)
  event(said({'kind', 'red_flag', 'reason', value, 'output_tokens', output_tokens}))
elseif kind == 'error' or kind == 'fatal' then
  outcome = kind
  redis.call('HINCRBY', KEYS[3], 'errors', 1)
  count('errors', 1)
  if kind == 'fatal' then redis.call('HSETNX', KEYS[7], 'fatal', value) end
  event({'kind', kind, 'reason', value})
elseif decided then
  outcome = 'late'
  redis.call('HINCRBY', KEYS[3], 'late', 1)
  redis.call('HINCRBY', KEYS[7], 'late_votes', 1)
  event(said({'kind', 'late', 'candidate', value}))
else
  local votes = redis.call('HINCRBY', KEYS[2], value, 1)
  -- A key's payload is its first vote's: stored only when that one differs from the key.
  if votes == 1 and payload ~= '' then redis.call('HSET', KEYS[4], value, payload) end
  redis.call('HINCRBY', KEYS[3], 'votes', 1)
  count('votes', 1)
  if by_model then redis.call('HINCRBY', KEYS[8], model .. ' ' .. value, 1) end
  -- A text without a digest (too short to tell a copy from a right answer) is never a copy.
  local copy = digest ~= '' and redis.call('HSETNX', KEYS[10], 'd:' .. digest, 1) == 0
  if copy then
    redis.call('HINCRBY', KEYS[3], 'copies', 1)
    count('copies', 1)
  else
    redis.call('HINCRBY', KEYS[10], 'c:' .. value, 1)
  end
  -- The leader is the one with most votes; the runner-up count is the most any other has. A new vote
  -- changes only its own candidate's count, so the ranking updates without reading the tally.
  if value == leader then
    leader_votes = votes
  elseif votes > leader_votes then
    runner_up_votes, leader, leader_votes = leader_votes, value, votes
  elseif votes > runner_up_votes then
    runner_up_votes = votes
  end
  redis.call('HSET', KEYS[3], 'leader', leader, 'leader_votes', leader_votes, 'runner_up_votes', runner_up_votes)
  local fields = {'kind', 'vote', 'candidate', value, 'output_tokens', output_tokens}
  if copy then
    table.insert(fields, 'copy')
    table.insert(fields, '1')
  end
  event(said(fields))
  if leader_votes >= k + runner_up_votes then
    outcome = 'decided'
    -- How many different texts the winner's votes were: its margin in evidence, copies counted once.
    local distinct = tonumber(redis.call('HGET', KEYS[10], 'c:' .. leader) or leader_votes)
    redis.call('HSET', KEYS[3], 'decided', '1', 'winner', leader, 'winner_distinct', distinct)
    redis.call('HINCRBY', KEYS[7], 'decisions', 1)
    event({'kind', 'decided', 'candidate', leader, 'votes', leader_votes, 'runner_up', runner_up_votes})
  else
    outcome = 'vote'
  end
end

local left = redis.call('TTL', KEYS[3])
if left < 0 then
  redis.call('EXPIRE', KEYS[3], ttl)
  left = ttl
end
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[4], KEYS[8], KEYS[9], KEYS[10]}) do
  if redis.call('TTL', key) == -1 then redis.call('EXPIRE', key, left) end
end

local snapshot = {decided = false}
local status = redis.call('HGETALL', KEYS[3])
for i = 1, #status, 2 do
  local f, v = status[i], status[i + 1]
  if f == 'decided' then
    snapshot.decided = v == '1'
  elseif f == 'leader' or f == 'winner' then
    snapshot[f] = v
  else
    snapshot[f] = tonumber(v)
  end
end
if snapshot.leader then
  local stored = redis.call('HGET', KEYS[4], snapshot.leader)
  if stored then snapshot.leader_payload = stored end
end
local notice = {sample_id = sample_id, step = step, input_hash = input_hash, outcome = outcome,
  snapshot = snapshot}
if outcome == 'red_flag' or outcome == 'error' or outcome == 'fatal' then notice.reason = value end
if spent then notice.spent_nusd = spent else notice.cost_unknown = model end
redis.call('RPUSH', KEYS[5], cjson.encode(notice))
return {outcome, leader_votes, runner_up_votes, notice.reason}
