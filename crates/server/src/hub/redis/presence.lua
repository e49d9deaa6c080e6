-- Changes a room's members and announces what changed, in one step:
-- adds this process's members (or refreshes their expiry), removes some,
-- drops every member whose process stopped refreshing it, then publishes a
-- `leave` for each user no longer present anywhere and a `join` for each user
-- new to the room. Whoever runs it first announces a change, exactly once.
-- KEYS: 1 the room's sorted set
-- ARGV: 1 channel, 2 room, 3 node id, 4 ttl in ms, 5 number of users to add,
--       6.. users to add, then users to remove
-- Returns the room's distinct users after the change (unsorted).
local key, channel, room, node = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local ttl, adds = tonumber(ARGV[4]), tonumber(ARGV[5])

-- member "<node>|<user>": node ids have no '|', so the first one splits
local function users_of(members)
  local set, list = {}, {}
  for _, member in ipairs(members) do
    local user = string.sub(member, string.find(member, '|', 1, true) + 1)
    if not set[user] then
      set[user] = true
      list[#list + 1] = user
    end
  end
  return set, list
end

local before_set, before = users_of(redis.call('ZRANGE', key, 0, -1))
local now = now_ms()
for i = 6, 5 + adds do
  redis.call('ZADD', key, int(now + ttl), node .. '|' .. ARGV[i])
end
for i = 6 + adds, #ARGV do
  redis.call('ZREM', key, node .. '|' .. ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now))
local after_set, after = users_of(redis.call('ZRANGE', key, 0, -1))
if #after > 0 then
  redis.call('PEXPIRE', key, int(ttl))
end

local function announce(kind, user)
  local header = cjson.encode({topic = room, kind = kind, user = user, from = user, count = #after, node = node})
  redis.call('PUBLISH', channel, 'S1 - 0\n' .. header .. '\n')
end
for _, user in ipairs(before) do
  if not after_set[user] then announce('leave', user) end
end
for _, user in ipairs(after) do
  if not before_set[user] then announce('join', user) end
end
return after
