-- Assigns the next position of a topic, keeps the message in its history and
-- publishes it, in one step so that positions are published in order.
-- KEYS: 1 topic hash, 2 history stream
-- ARGV: 1 channel, 2 epoch to use if the topic has none, 3 header (JSON),
--       4 payload, 5 text ('1'/'0'), 6 has sender ('1'/'0'), 7 sender,
--       8 history length (0: keep none), 9 history age in ms (> 0)
-- Returns {epoch, offset}.
local meta, history = KEYS[1], KEYS[2]
local epoch = ensure_epoch(meta, history, ARGV[2])
redis.call('HINCRBY', meta, 'seq', 1)
local offset = redis.call('HGET', meta, 'seq')

local len, age = tonumber(ARGV[8]), tonumber(ARGV[9])
if len > 0 then
  local now = now_ms()
  if ARGV[6] == '1' then
    redis.call('XADD', history, 'MAXLEN', '~', ARGV[8], '0-' .. offset,
      'payload', ARGV[4], 'text', ARGV[5], 'time', int(now), 'from', ARGV[7])
  else
    redis.call('XADD', history, 'MAXLEN', '~', ARGV[8], '0-' .. offset,
      'payload', ARGV[4], 'text', ARGV[5], 'time', int(now))
  end
  -- Drop what is too old from the front (a bounded look per publish; reads
  -- check ages as well), and the whole stream once the topic is idle.
  local cutoff = now - age
  local last_stale = nil
  for _, entry in ipairs(redis.call('XRANGE', history, '-', '+', 'COUNT', 64)) do
    local fields, time = entry[2], nil
    for i = 1, #fields, 2 do
      if fields[i] == 'time' then time = tonumber(fields[i + 1]) end
    end
    if time == nil or time > cutoff then break end
    last_stale = entry[1]
  end
  if last_stale then
    local stale_offset = tonumber(string.sub(last_stale, 3))
    redis.call('XTRIM', history, 'MINID', '0-' .. int(stale_offset + 1))
  end
  redis.call('PEXPIRE', history, ARGV[9])
end

redis.call('PUBLISH', ARGV[1], 'S1 ' .. epoch .. ' ' .. offset .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
return {epoch, offset}
