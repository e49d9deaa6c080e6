-- Shared by every sockeye script (prepended to each).

-- Redis's clock in whole milliseconds, so that every process agrees on it.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integer as Redis wants it in an argument ("1e+15" is not a number to Redis).
local function int(n)
  return string.format('%d', n)
end

-- Makes sure the topic has an epoch; a new epoch starts a new history, so an
-- old stream (if any survived its hash) is dropped. Returns epoch, last offset.
local function ensure_epoch(meta, history, new_epoch)
  if redis.call('HSETNX', meta, 'epoch', new_epoch) == 1 then
    redis.call('DEL', history)
  end
  local epoch = redis.call('HGET', meta, 'epoch')
  local seq = redis.call('HGET', meta, 'seq') or '0'
  return epoch, seq
end
