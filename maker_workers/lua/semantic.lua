-- semantic.lua: the prelude that makes record_sample.lua vote on meaning (answer.match: semantic).
--
-- VoteBook loads this file in front of record_sample.lua as one script, so a vote is assigned to its
-- candidate, counted and checked for the margin in one atomic call: two workers can never split one
-- meaning into two candidates by racing. record_sample.lua calls `semantic` only when ARGV[23] is given.
--
-- A candidate is named by its first answer's vote key (its representative: the payload the winner
-- hands on). Its vectors are stored as packed little-endian float32: the representative's under the
-- candidate's key, and up to ARGV[30] of its other members' (those at least `open` alike to the representative,
-- so the candidate's reach cannot drift) under key .. NUL .. their own vote key. A vote is
-- as near a candidate as it is to the nearest of those (single linkage): a paraphrase far from the first
-- phrasing still finds one of its kind, where a real embedding model's different meanings lie as near as
-- its paraphrases do.
--
-- KEYS[3] status   HASH  gains `candidates` (how many), `over_cap` (votes refused by the cap) and
--                        `ambiguous` (votes thrown as neither near enough nor far enough)
-- KEYS[6] events   STREAM gains one `phrasing` event per assigned vote: candidate, answer, similarity
-- KEYS[7] stats    HASH  gains embedding_calls, embedding_tokens, embedding_cost_nusd (embedding_cost_unknown)
-- KEYS[11] vectors HASH  candidate key (or key NUL member) -> its exact-fields group, "\n", then its packed vector
--
-- ARGV[23] the answer's unit vector, packed float32 (its length gives the dimension)
-- ARGV[24] the answer's exact-fields group: canonical JSON of the fields that must match exactly, "" if none;
--          a candidate of another group is never a match, however similar
-- ARGV[25] join: the least similarity to a candidate that joins it
-- ARGV[26] the most candidates a contest may open; a vote past it is a red flag `too_many_candidates`
-- ARGV[27] tokens the embedding call served   ARGV[28] what it cost in nano-dollars (-1: unknown)
-- ARGV[29] open: a vote less similar than this to every candidate opens a new one. Between open and join the
--          vote is a red flag `ambiguous_meaning`: the embedding model cannot say, so it is neither merged nor
--          split off (open = join when one threshold separates the meanings)
-- ARGV[30] the most members' vectors kept per candidate besides its representative's
--
-- The nearest candidate at or above join wins; equal similarity goes to the smaller key. An answer that is
-- one of a candidate's stored answers joins it (similarity 1, whatever float32 rounding gives).

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

  local packed, group = ARGV[23], ARGV[24]
  local join, open, keep = tonumber(ARGV[25]), tonumber(ARGV[29]), tonumber(ARGV[30])
  local mine = unpack_vector(packed)
  local dim = #packed / 4
  -- candidate -> its highest similarity; -> its stored members; -> its representative's similarity
  local nearest, members, first, count = {}, {}, {}, 0
  local stored = redis.call('HGETALL', KEYS[11])
  for i = 1, #stored, 2 do
    local field, entry = stored[i], stored[i + 1]
    local cut = string.find(field, '\0', 1, true)
    local candidate = cut and string.sub(field, 1, cut - 1) or field
    local answer = cut and string.sub(field, cut + 1) or field
    if cut then members[candidate] = (members[candidate] or 0) + 1 else count = count + 1 end
    local nl = string.find(entry, '\n', 1, true)
    local theirs = string.sub(entry, nl + 1)
    if string.sub(entry, 1, nl - 1) == group and #theirs == #packed then
      local similarity = 0
      if answer == value then
        similarity = 1  -- one of its answers, whatever float32 rounding says
      else
        local other = unpack_vector(theirs)
        for d = 1, dim do similarity = similarity + mine[d] * other[d] end
      end
      if nearest[candidate] == nil or similarity > nearest[candidate] then nearest[candidate] = similarity end
      if not cut then first[candidate] = similarity end
    end
  end
  local best, best_similarity = nil, nil
  for candidate, similarity in pairs(nearest) do
    if best == nil or similarity > best_similarity or (similarity == best_similarity and candidate < best) then
      best, best_similarity = candidate, similarity
    end
  end

  if best ~= nil and best_similarity >= join then
    -- A member is kept only within `open` of the representative: a candidate's reach cannot drift away from it.
    if best_similarity < 1 and best ~= value and (members[best] or 0) < keep and (first[best] or 0) >= open then
      redis.call('HSET', KEYS[11], best .. '\0' .. value, group .. '\n' .. packed)
    end
  elseif best ~= nil and best_similarity >= open then
    redis.call('HINCRBY', KEYS[3], 'ambiguous', 1)
    return 'red_flag', 'ambiguous_meaning'
  else
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
