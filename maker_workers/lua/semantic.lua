-- semantic.lua: the prelude that makes record_sample.lua vote on meaning (answer.match: semantic).
--
-- VoteBook loads this file in front of record_sample.lua as one script, so a vote is assigned to its
-- candidate, counted and checked for the margin in one atomic call: two workers can never split one
-- meaning into two candidates by racing. record_sample.lua calls `semantic` only when ARGV[23] is given.
--
-- A candidate is named by its first answer's vote key (its representative: the payload the winner
-- hands on); its unit vector is stored once, as packed little-endian float32.
--
-- KEYS[3] status   HASH  gains `candidates` (how many) and `over_cap` (votes refused by the cap)
-- KEYS[6] events   STREAM gains one `phrasing` event per assigned vote: candidate, answer, similarity
-- KEYS[7] stats    HASH  gains embedding_calls, embedding_tokens, embedding_cost_nusd (embedding_cost_unknown)
-- KEYS[11] vectors HASH  candidate key -> its exact-fields group, "\n", then its packed unit vector
--
-- ARGV[23] the answer's unit vector, packed float32 (its length gives the dimension)
-- ARGV[24] the answer's exact-fields group: canonical JSON of the fields that must match exactly, "" if none;
--          a candidate of another group is never a match, however similar
-- ARGV[25] threshold: the least cosine similarity that joins a candidate
-- ARGV[26] the most candidates a contest may open; a vote past it is a red flag `too_many_candidates`
-- ARGV[27] tokens the embedding call served   ARGV[28] what it cost in nano-dollars (-1: unknown)
--
-- The nearest candidate at or above the threshold wins; equal similarity goes to the smaller key. An answer
-- that is a representative itself joins its own candidate (similarity 1, whatever float32 rounding gives).

-- In chunks: one unpack of a long vector returns more values than Lua's stack holds (~8000).
local function unpack_vector(packed)
  local out, pos, left = {}, 1, #packed / 4
  while left > 0 do
    local n = math.min(left, 1024)
    local values = {struct.unpack('<' .. string.rep('f', n), packed, pos)}
    pos = table.remove(values)  -- struct.unpack returns the next position last
    for _, v in ipairs(values) do out[#out + 1] = v end
    left = left - n
  end
  return out
end

-- Returns the (kind, value) the vote is recorded as: its candidate's key, or a red flag.
local function semantic(kind, value, decided)
  local tokens, cost = tonumber(ARGV[27]), tonumber(ARGV[28])
  redis.call('HINCRBY', KEYS[7], 'embedding_calls', 1)
  redis.call('HINCRBY', KEYS[7], 'embedding_tokens', tokens)
  if cost >= 0 then
    redis.call('HINCRBY', KEYS[7], 'embedding_cost_nusd', cost)
  else
    redis.call('HINCRBY', KEYS[7], 'embedding_cost_unknown', 1)
  end
  if kind ~= 'vote' or decided then return kind, value end

  local packed, group, threshold = ARGV[23], ARGV[24], tonumber(ARGV[25])
  local mine = unpack_vector(packed)
  local dim = #packed / 4
  local best, best_similarity, count = nil, nil, 0
  local stored = redis.call('HGETALL', KEYS[11])
  for i = 1, #stored, 2 do
    count = count + 1
    local entry = stored[i + 1]
    local cut = string.find(entry, '\n', 1, true)
    local theirs = string.sub(entry, cut + 1)
    if string.sub(entry, 1, cut - 1) == group and #theirs == #packed then
      local other = unpack_vector(theirs)
      local similarity = 0
      for d = 1, dim do similarity = similarity + mine[d] * other[d] end
      local key = stored[i]
      if key == value then similarity = 1 end  -- the representative itself, whatever float32 rounding says
      if similarity >= threshold and (best == nil or similarity > best_similarity
          or (similarity == best_similarity and key < best)) then
        best, best_similarity = key, similarity
      end
    end
  end

  if best == nil then
    if count >= tonumber(ARGV[26]) then
      redis.call('HINCRBY', KEYS[3], 'over_cap', 1)
      return 'red_flag', 'too_many_candidates'
    end
    best, best_similarity = value, 1
    redis.call('HSET', KEYS[11], value, group .. '\n' .. packed)
    redis.call('HSET', KEYS[3], 'candidates', count + 1)
    local left = redis.call('TTL', KEYS[3])
    if redis.call('TTL', KEYS[11]) == -1 then redis.call('EXPIRE', KEYS[11], left > 0 and left or tonumber(ARGV[11])) end
  end
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[10], '*', 'step', ARGV[6], 'input', ARGV[7], 'sample', ARGV[1],
    'kind', 'phrasing', 'candidate', best, 'answer', value, 'similarity', string.format('%.6f', best_similarity))
  return kind, best
end
