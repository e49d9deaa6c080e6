-- A topic's latest position (giving it an epoch if it has none).
-- KEYS: 1 topic hash, 2 history stream
-- ARGV: 1 epoch to use if the topic has none
-- Returns {epoch, last offset}.
local epoch, seq = ensure_epoch(KEYS[1], KEYS[2], ARGV[1])
return {epoch, seq}
