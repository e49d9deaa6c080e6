-- Reads a topic's position and the history after an offset, at one instant.
-- KEYS: 1 topic hash, 2 history stream
-- ARGV: 1 epoch to use if the topic has none, 2 the epoch asked about,
--       3 first offset wanted, 4 how many at most (0: none)
-- Returns {epoch, last offset, now (ms), entries}; entries only when the
-- epoch asked about is the topic's.
local meta, history = KEYS[1], KEYS[2]
local epoch, seq = ensure_epoch(meta, history, ARGV[1])
local entries = {}
if epoch == ARGV[2] and tonumber(ARGV[4]) > 0 then
  entries = redis.call('XRANGE', history, '0-' .. ARGV[3], '+', 'COUNT', ARGV[4])
end
return {epoch, seq, int(now_ms()), entries}
