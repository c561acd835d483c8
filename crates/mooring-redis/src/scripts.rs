//! The Lua scripts. Each touches exactly one key (so each runs on one Cluster slot) and does its whole job
//! in one round trip.
//!
//! Hash layout of a session (`<prefix>s:<store key>`):
//!
//! | field | value |
//! |---|---|
//! | `@v` | version (integer; `HINCRBY` on every applied delta) |
//! | `@c` | created at (unix ms) |
//! | `@d` | absolute deadline (unix ms) |
//! | `@u` | the signed-in user (absent when signed out) |
//! | `<name>` | an attribute's value as the engine encoded it; names starting with `@` are stored as `@<name>` |
//!
//! The key's TTL is the idle expiry, capped by `@d`: every load and write sets `PEXPIREAT min(now + idle,
//! @d)`. Times come from the application (`now` argument), as for every other store.

use redis::Script;

use crate::error::Result;

/// Loads a session and slides its expiry: `nil`, or `{expires_at, {field, value, ...}}`.
const LOAD: &str = r"
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local d = nil
for i = 1, #h, 2 do
  if h[i] == '@d' then d = tonumber(h[i + 1]) break end
end
if d == nil then return {0, h} end
local now = tonumber(ARGV[1])
if d <= now then return false end
local e = math.min(now + tonumber(ARGV[2]), d)
redis.call('PEXPIREAT', KEYS[1], e)
return {e, h}
";

/// Creates a session unless the key exists: 1 created, 0 exists.
/// ARGV: now, idle, deadline, then field/value pairs.
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
local v = cur['@v']
local d = tonumber(cur['@d'])
if v == nil or d == nil then return {-2} end
local now = tonumber(ARGV[1])
if d <= now then return {0} end
if ARGV[3] ~= '' and ARGV[3] ~= v then return {-1, tonumber(v)} end
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
local nv = redis.call('HINCRBY', KEYS[1], '@v', 1)
redis.call('PEXPIREAT', KEYS[1], math.min(now + tonumber(ARGV[2]), d))
return {1, nv, olduser}
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
            load: Script::new(LOAD),
            create: Script::new(CREATE),
            apply: Script::new(APPLY),
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
