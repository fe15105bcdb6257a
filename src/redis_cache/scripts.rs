//! The Lua scripts the server runs atomically for the calls that need more than one
//! command (KEYS[1] is the full key), and the handle's prepared set of them.

use redis::Script;

/// Lua, run atomically by the server. KEYS[1] is the full key.
pub(super) const GET: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'string' then return {redis.call('GET', KEYS[1]), 0, redis.call('PTTL', KEYS[1])} end
if t == 'hash' then
  local r = redis.call('HMGET', KEYS[1], 'v', 'f')
  return {r[1] or '', tonumber(r[2]) or 0, redis.call('PTTL', KEYS[1])}
end
return false";

pub(super) const POP: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'string' then return {redis.call('GETDEL', KEYS[1]), 0} end
if t == 'hash' then
  local r = redis.call('HMGET', KEYS[1], 'v', 'f')
  redis.call('DEL', KEYS[1])
  return {r[1] or '', tonumber(r[2]) or 0}
end
return false";

pub(super) const GET_MANY: &str = r"
local out = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k).ok
  if t == 'string' then out[i] = {redis.call('GET', k), 0, redis.call('PTTL', k)}
  elseif t == 'hash' then
    local r = redis.call('HMGET', k, 'v', 'f')
    out[i] = {r[1] or '', tonumber(r[2]) or 0, redis.call('PTTL', k)}
  else out[i] = false end
end
return out";

/// ARGV: value, flags, ttl in ms ('' = none).
pub(super) const ADD_FLAGGED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'f', ARGV[2])
if ARGV[3] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1";

/// ARGV: delta, ttl in ms for a new counter ('' = none). A value with flags is a
/// counter too when its text is one: it becomes a string (flags 0) for INCRBY, which
/// parses and checks for overflow exactly (Lua numbers are doubles), and is put back as
/// it was when INCRBY refuses it. The sum is returned as the stored text (GET), never
/// through a Lua number: INCRBY's integer reply becomes a double in Lua, exact only to
/// 2^53 (INT64_MAX + 0 came back wrong).
pub(super) const INCR: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'hash' then
  local r = redis.call('HMGET', KEYS[1], 'v', 'f')
  local pttl = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[1], r[1] or '')
  if pttl > 0 then redis.call('PEXPIRE', KEYS[1], pttl) end
  local v = redis.pcall('INCRBY', KEYS[1], ARGV[1])
  if type(v) == 'table' and v.err then
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], 'v', r[1] or '', 'f', r[2] or '0')
    if pttl > 0 then redis.call('PEXPIRE', KEYS[1], pttl) end
    return v
  end
  return redis.call('GET', KEYS[1])
end
if t ~= 'none' and t ~= 'string' then
  return redis.error_reply('NOTNUMERIC the entry is a Redis ' .. t .. ', not a counter')
end
redis.call('INCRBY', KEYS[1], ARGV[1])
if t == 'none' and ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('GET', KEYS[1])";

/// ARGV: ttl in ms ('' = never).
pub(super) const TOUCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '' then redis.call('PERSIST', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1";

pub(super) struct Scripts {
    pub get: Script,
    pub pop: Script,
    pub get_many: Script,
    pub add_flagged: Script,
    pub incr: Script,
    pub touch: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            get: Script::new(GET),
            pop: Script::new(POP),
            get_many: Script::new(GET_MANY),
            add_flagged: Script::new(ADD_FLAGGED),
            incr: Script::new(INCR),
            touch: Script::new(TOUCH),
        }
    }
}
