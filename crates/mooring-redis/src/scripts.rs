//! The Lua scripts. Each touches exactly one key (so each runs on one Cluster slot) and does its whole job
//! in one round trip.
//!
//! Hash layout of a session (key `<prefix><first 14 characters of the store key>`):
//!
//! | field | value |
//! |---|---|
//! | `""` (empty name) | metadata, packed big-endian: version (u32), created at (unix ms, u48), then either the deadline's offset from the creation (ms, u32: 14 bytes in all) or, when the offset does not fit, the deadline itself (unix ms, u48: 16 bytes) |
//! | `@u` | the signed-in user (absent when signed out) |
//! | `<name>` | an attribute's value as the engine encoded it; names that are empty or start with `@` are stored as `@<name>` |
//!
//! The packing keeps a small session in Redis's smallest listpack class: a session holding one small
//! integer costs 88 bytes of `MEMORY USAGE`. The key's TTL is the idle expiry, capped by the deadline: every
//! load and write sets `PEXPIREAT min(now + idle, deadline)`. Times come from the application (`now`
//! argument), as for every other store.

use redis::Script;

use crate::error::Result;

/// Shared by the scripts that read metadata: `meta(m)` returns version, created, deadline (or nil).
const META: &str = r"
local function meta(m)
  if m == nil then return nil end
  if #m == 14 then
    local v, c, o = struct.unpack('>I4I6I4', m)
    return v, c, c + o
  elseif #m == 16 then
    local v, c, d = struct.unpack('>I4I6I6', m)
    return v, c, d
  end
  return nil
end
local function packmeta(v, c, d)
  if d >= c and d - c < 4294967296 then return struct.pack('>I4I6I4', v, c, d - c) end
  return struct.pack('>I4I6I6', v, c, d)
end
";

/// Loads a session and slides its expiry: `nil`, or `{expires_at, {field, value, ...}}` (expires_at 0 when
/// the metadata is unreadable: the client reports the record as corrupt).
const LOAD: &str = r"
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local m = nil
for i = 1, #h, 2 do
  if h[i] == '' then m = h[i + 1] break end
end
local _, _, d = meta(m)
if d == nil then return {0, h} end
local now = tonumber(ARGV[1])
if d <= now then return false end
local e = math.min(now + tonumber(ARGV[2]), d)
redis.call('PEXPIREAT', KEYS[1], e)
return {e, h}
";

/// Creates a session unless the key exists: 1 created, 0 exists.
/// ARGV: now, idle, deadline, then field/value pairs (the metadata field included).
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIREAT', KEYS[1], math.min(tonumber(ARGV[1]) + tonumber(ARGV[2]), tonumber(ARGV[3])))
return 1
";

/// Applies a delta. ARGV: now, idle, expected version ('' for none), max bytes, user op ('' keep, '-' clear,
/// '=<user>' set), number of pairs n, n field/value pairs, then fields to delete.
/// Returns {1, new version, previous user or ''}, {0} missing, {-1, current version} conflict,
/// {-2} malformed record, {-3, size} too large.
const APPLY: &str = r"
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return {0} end
local cur = {}
for i = 1, #h, 2 do cur[h[i]] = h[i + 1] end
local v, c, d = meta(cur[''])
if d == nil then return {-2} end
local now = tonumber(ARGV[1])
if d <= now then return {0} end
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= v then return {-1, v} end
cur[''] = packmeta(v + 1, c, d)
local n = tonumber(ARGV[6])
local last = 6 + 2 * n
for i = 7, last, 2 do cur[ARGV[i]] = ARGV[i + 1] end
for i = last + 1, #ARGV do cur[ARGV[i]] = nil end
local olduser = cur['@u'] or ''
if ARGV[5] == '-' then cur['@u'] = nil elseif ARGV[5] ~= '' then cur['@u'] = string.sub(ARGV[5], 2) end
local size = 0
for f, val in pairs(cur) do size = size + #f + #val + 2 end
if size > tonumber(ARGV[4]) then return {-3, size} end
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 7, last)) end
if #ARGV > last then redis.call('HDEL', KEYS[1], unpack(ARGV, last + 1)) end
if ARGV[5] == '-' then
  redis.call('HDEL', KEYS[1], '@u')
elseif ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], '@u', string.sub(ARGV[5], 2))
end
redis.call('HSET', KEYS[1], '', cur[''])
redis.call('PEXPIREAT', KEYS[1], math.min(now + tonumber(ARGV[2]), d))
return {1, v + 1, olduser}
";

/// Deletes a session only if it still belongs to the user: 1 deleted, 0 not.
const DELETE_IF_USER: &str = r"
if redis.call('HGET', KEYS[1], '@u') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Reads a session and its absolute expiry without touching it: `{pexpiretime, {field, value, ...}}`.
const PEEK: &str = r"
return {redis.call('PEXPIRETIME', KEYS[1]), redis.call('HGETALL', KEYS[1])}
";

/// The store's scripts, with their SHA1s.
pub(crate) struct Scripts {
    pub(crate) load: Script,
    pub(crate) create: Script,
    pub(crate) apply: Script,
    pub(crate) delete_if_user: Script,
    pub(crate) peek: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            load: Script::new(&format!("{META}{LOAD}")),
            create: Script::new(CREATE),
            apply: Script::new(&format!("{META}{APPLY}")),
            delete_if_user: Script::new(DELETE_IF_USER),
            peek: Script::new(PEEK),
        }
    }

    /// `SCRIPT LOAD`s every script (on Cluster, redis-rs sends it to every master).
    pub(crate) async fn load(&self, conn: &mut impl redis::aio::ConnectionLike) -> Result<()> {
        for script in [
            &self.load,
            &self.create,
            &self.apply,
            &self.delete_if_user,
            &self.peek,
        ] {
            script.prepare_invoke().load_async(conn).await?;
        }
        Ok(())
    }
}

/// An `EVALSHA` command for a pipeline (scripts are loaded up front and reloaded on `NOSCRIPT`).
pub(crate) fn evalsha(script: &Script, key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(1).arg(key);
    cmd
}
