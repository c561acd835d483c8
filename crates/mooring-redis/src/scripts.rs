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
//! write sets `PEXPIREAT min(now + idle, deadline)`, and a load (no script: `HGETALL` + `PEXPIREAT now +
//! idle`, pipelined) caps it again when it finds the deadline closer than that. Times come from the
//! application (`now` argument), as for every other store.

use redis::Script;

use crate::error::Result;

/// Reads the metadata field: `meta(m)` returns version, created, deadline (or nil).
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
";

/// Creates a session unless the key exists: 1 created, 0 exists.
/// ARGV: expiry (unix ms, already capped at the deadline), then field/value pairs (the metadata included).
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
";

/// Applies a delta. ARGV: now, now + idle, expected version ('' for none), max bytes, user op ('' keep, '-'
/// clear, '=<user>' set), number of pairs n, n field/value pairs, then fields to delete.
/// Returns {1, new version, previous user or '', deadline}, {0} missing, {-1, current version} conflict,
/// {-2} malformed record, {-3, size} too large. The deadline comes back so that a sign-in can index the
/// session without reading it again.
///
/// Times travel as the decimal strings the client formats, and the metadata is rewritten by replacing only
/// its version bytes: Lua converts no number to text on the common path (that conversion, and the Lua work
/// around the calls, used to cost more than the writes themselves). The size after the delta is the size of
/// the untouched fields plus the delta's, in one pass over the hash.
const APPLY: &str = r"
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return {0} end
local n = tonumber(ARGV[6])
local last = 6 + 2 * n
local op = ARGV[5]
local touched = {}
local size = 0
for i = 7, last, 2 do
  touched[ARGV[i]] = true
  size = size + #ARGV[i] + #ARGV[i + 1] + 2
end
for i = last + 1, #ARGV do touched[ARGV[i]] = true end
if op ~= '' then
  touched['@u'] = true
  if op ~= '-' then size = size + #op + 3 end
end
local m, olduser
for i = 1, #h, 2 do
  local f = h[i]
  if f == '' then m = h[i + 1] elseif f == '@u' then olduser = h[i + 1] end
  if not touched[f] then size = size + #f + #h[i + 1] + 2 end
end
local v, _, d = meta(m)
if d == nil then return {-2} end
if d <= tonumber(ARGV[1]) then return {0} end
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= v then return {-1, v} end
if size > tonumber(ARGV[4]) then return {-3, size} end
local nm = struct.pack('>I4', v + 1) .. string.sub(m, 5)
if op == '-' then
  redis.call('HDEL', KEYS[1], '@u', unpack(ARGV, last + 1))
elseif #ARGV > last then
  redis.call('HDEL', KEYS[1], unpack(ARGV, last + 1))
end
if op ~= '' and op ~= '-' then
  redis.call('HSET', KEYS[1], '', nm, '@u', string.sub(op, 2), unpack(ARGV, 7, last))
else
  redis.call('HSET', KEYS[1], '', nm, unpack(ARGV, 7, last))
end
local e = ARGV[2]
if tonumber(e) > d then e = d end
redis.call('PEXPIREAT', KEYS[1], e)
return {1, v + 1, olduser or '', d}
";

/// Deletes a session only if it still belongs to the user: 1 deleted, 0 not.
const DELETE_IF_USER: &str = r"
if redis.call('HGET', KEYS[1], '@u') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Deletes a session and returns who it belonged to, so the caller can drop it from that user's index (a
/// separate key, hence a separate request on Cluster): {1, user or nil} deleted, {0} nothing there. A key of
/// another type (a foreign or damaged value) is deleted too, with no user.
const DELETE: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return {0} end
local u = false
if t == 'hash' then u = redis.call('HGET', KEYS[1], '@u') end
redis.call('DEL', KEYS[1])
return {1, u}
";

/// Reads a session and its absolute expiry without touching it: `{pexpiretime, {field, value, ...}}`.
const PEEK: &str = r"
return {redis.call('PEXPIRETIME', KEYS[1]), redis.call('HGETALL', KEYS[1])}
";

/// The store's scripts, with their SHA1s.
pub(crate) struct Scripts {
    pub(crate) create: Script,
    pub(crate) apply: Script,
    pub(crate) delete_if_user: Script,
    pub(crate) delete: Script,
    pub(crate) peek: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            create: Script::new(CREATE),
            apply: Script::new(&format!("{META}{APPLY}")),
            delete_if_user: Script::new(DELETE_IF_USER),
            delete: Script::new(DELETE),
            peek: Script::new(PEEK),
        }
    }

    /// `SCRIPT LOAD`s every script (on Cluster, redis-rs sends it to every master).
    pub(crate) async fn load(&self, conn: &mut impl redis::aio::ConnectionLike) -> Result<()> {
        for script in [
            &self.create,
            &self.apply,
            &self.delete_if_user,
            &self.delete,
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
