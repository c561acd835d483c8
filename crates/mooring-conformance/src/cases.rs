//! The conformance cases. Each takes a fresh [`Harness`] and panics with a message naming the broken rule.
//!
//! Expiry cases use real time with short lifetimes (about a second), because a store such as Redis expires
//! keys on its own clock and cannot be handed a fake one.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use mooring::{Applied, Delta, Error, Policy, Record, SessionId, SessionStore, StoreKey, now_ms};

use crate::Harness;

/// The policy most cases use: a long idle timeout, a 4 KiB record limit and no per-user cap.
fn policy() -> Policy {
    Policy {
        idle: Duration::from_secs(600),
        max_record_bytes: 4096,
        max_sessions_per_user: None,
    }
}

/// What the listing cases pass as `list_user`'s limit when they want every session.
const ALL: usize = 1000;

fn key() -> StoreKey {
    SessionId::generate().store_key()
}

fn record(attrs: &[(&str, &[u8])]) -> Record {
    Record {
        created_at: now_ms(),
        deadline: now_ms() + 3_600_000,
        user: None,
        attrs: attrs.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())).collect(),
    }
}

fn set(name: &str, value: &[u8]) -> Delta {
    let mut delta = Delta::default();
    delta.set.insert(name.to_owned(), value.to_vec());
    delta
}

async fn must_load(store: &dyn SessionStore, key: &StoreKey, policy: &Policy) -> mooring::Loaded {
    match store.load(key, policy).await {
        Ok(Some(loaded)) => loaded,
        other => panic!("expected a live record, got {other:?}"),
    }
}

/// The keys `list_user` gives for `user`, sorted; panics with `why` if the listing fails.
async fn user_keys(store: &dyn SessionStore, user: &str, why: &str) -> Vec<StoreKey> {
    let mut keys: Vec<StoreKey> = match store.list_user(user, ALL).await {
        Ok(listed) => listed.into_iter().map(|(k, _)| k).collect(),
        Err(err) => panic!("{why}: {err:?}"),
    };
    keys.sort();
    keys
}

async fn must_be_gone(store: &dyn SessionStore, key: &StoreKey, policy: &Policy, why: &str) {
    match store.load(key, policy).await {
        Ok(None) => {}
        other => panic!("{why}: expected no record, got {other:?}"),
    }
}

/// A created record loads back byte for byte, at version 1, with an expiry in the future.
pub async fn round_trip<H: Harness>(h: &H) {
    let store = h.store();
    let k = key();
    let mut r = record(&[("n", &[1]), ("name", b"ada"), ("empty", b"")]);
    r.user = Some("user-1".into());
    store.create(&k, &r, &policy()).await.expect("create");
    let loaded = must_load(&*store, &k, &policy()).await;
    assert_eq!(loaded.record, r, "record must load back unchanged");
    assert_eq!(loaded.version, 1, "a new record has version 1");
    assert!(loaded.expires_at > now_ms(), "expiry must be in the future");
    assert!(
        loaded.expires_at <= r.deadline,
        "expiry must not pass the deadline"
    );
    must_be_gone(&*store, &key(), &policy(), "an unknown key").await;
}

/// Loading slides the idle expiry forward.
pub async fn load_slides_idle_expiry<H: Harness>(h: &H) {
    let store = h.store();
    let k = key();
    let short = Policy {
        idle: Duration::from_secs(2),
        ..policy()
    };
    store
        .create(&k, &record(&[("a", b"1")]), &short)
        .await
        .expect("create");
    let first = must_load(&*store, &k, &short).await.expires_at;
    let long = Policy {
        idle: Duration::from_secs(300),
        ..policy()
    };
    let second = must_load(&*store, &k, &long).await;
    let third = must_load(&*store, &k, &long).await;
    assert!(
        third.expires_at > first + 60_000,
        "load must slide the expiry: {first} then {}",
        third.expires_at
    );
    assert_eq!(
        second.version, third.version,
        "a load must not change the version"
    );
}

/// A record not touched for longer than the idle timeout is gone; touching it keeps it alive.
pub async fn idle_expiry<H: Harness>(h: &H) {
    let store = h.store();
    let idle = Policy {
        idle: Duration::from_millis(1500),
        ..policy()
    };
    let (kept, dropped) = (key(), key());
    store
        .create(&kept, &record(&[("a", b"1")]), &idle)
        .await
        .expect("create");
    store
        .create(&dropped, &record(&[("a", b"1")]), &idle)
        .await
        .expect("create");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        must_load(&*store, &kept, &idle).await;
    }
    must_be_gone(
        &*store,
        &dropped,
        &idle,
        "idle for 2.5 s with a 1.5 s idle timeout",
    )
    .await;
    assert_eq!(
        store
            .apply(&dropped, &set("b", b"2"), &idle)
            .await
            .expect("apply"),
        Applied::Missing
    );
    must_load(&*store, &kept, &idle).await;
}

/// A record past its absolute deadline is gone however active it was. The loads are timed against the
/// deadline itself, so a slow machine makes fewer of them instead of a false failure.
pub async fn absolute_deadline<H: Harness>(h: &H) {
    let store = h.store();
    let k = key();
    let mut r = record(&[("a", b"1")]);
    r.deadline = now_ms() + 2000;
    store.create(&k, &r, &policy()).await.expect("create");
    let mut loads = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if now_ms() + 150 >= r.deadline {
            break;
        }
        let loaded = must_load(&*store, &k, &policy()).await;
        assert!(
            loaded.expires_at <= r.deadline,
            "expiry must be capped by the deadline"
        );
        loads += 1;
    }
    assert!(
        loads >= 1,
        "the store took the whole lifetime to create the record"
    );
    tokio::time::sleep(Duration::from_millis(r.deadline.saturating_sub(now_ms()) + 300)).await;
    must_be_gone(&*store, &k, &policy(), "past the absolute deadline").await;
    assert_eq!(
        store.apply(&k, &set("b", b"2"), &policy()).await.expect("apply"),
        Applied::Missing
    );
}

/// A delta sets and removes only the attributes it names, changes the user, and bumps the version.
pub async fn deltas_only_touch_their_attributes<H: Harness>(h: &H) {
    let store = h.store();
    let k = key();
    store
        .create(&k, &record(&[("a", b"1"), ("b", b"2"), ("c", b"3")]), &policy())
        .await
        .expect("create");
    let mut delta = set("b", b"two");
    delta.remove.insert("c".into());
    delta.set.insert("d".into(), b"4".to_vec());
    delta.user = Some(Some("user-9".into()));
    assert_eq!(
        store.apply(&k, &delta, &policy()).await.expect("apply"),
        Applied::Saved { version: 2 }
    );
    let loaded = must_load(&*store, &k, &policy()).await;
    let want: BTreeMap<String, Vec<u8>> = [("a", &b"1"[..]), ("b", b"two"), ("d", b"4")]
        .iter()
        .map(|(k, v)| ((*k).into(), v.to_vec()))
        .collect();
    assert_eq!(loaded.record.attrs, want);
    assert_eq!(loaded.record.user.as_deref(), Some("user-9"));
    assert_eq!(loaded.version, 2);
    let clear = Delta {
        user: Some(None),
        ..Delta::default()
    };
    assert_eq!(
        store.apply(&k, &clear, &policy()).await.expect("apply"),
        Applied::Saved { version: 3 }
    );
    assert_eq!(
        must_load(&*store, &k, &policy()).await.record.user,
        None,
        "the user can be cleared"
    );
}

/// Many concurrent writers, each setting its own attribute many times: every final value survives.
pub async fn concurrent_writers_keep_their_attributes<H: Harness>(h: &H) {
    let store = h.store();
    let k = key();
    store.create(&k, &record(&[]), &policy()).await.expect("create");
    let writers = 8;
    let rounds = 25u32;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, k) = (Arc::clone(&store), k.clone());
        tasks.push(tokio::spawn(async move {
            for round in 1..=rounds {
                let delta = set(&format!("w{w}"), &round.to_be_bytes());
                match store.apply(&k, &delta, &policy()).await {
                    Ok(Applied::Saved { .. }) => {}
                    other => panic!("writer {w} round {round}: {other:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    let loaded = must_load(&*store, &k, &policy()).await;
    for w in 0..writers {
        assert_eq!(
            loaded.record.attrs.get(&format!("w{w}")).map(Vec::as_slice),
            Some(&rounds.to_be_bytes()[..]),
            "writer {w}'s last write was lost"
        );
    }
    assert_eq!(
        loaded.version,
        1 + u64::from(rounds) * writers as u64,
        "every applied delta bumps the version"
    );
}

/// A delta with an expected version applies only while that version is current.
pub async fn compare_and_set<H: Harness>(h: &H) {
    let store = h.store();
    let k = key();
    store
        .create(&k, &record(&[("n", &[0])]), &policy())
        .await
        .expect("create");
    let mut first = set("n", &[1]);
    first.expected_version = Some(1);
    assert_eq!(
        store.apply(&k, &first, &policy()).await.expect("apply"),
        Applied::Saved { version: 2 }
    );
    let mut stale = set("n", &[9]);
    stale.expected_version = Some(1);
    assert_eq!(
        store.apply(&k, &stale, &policy()).await.expect("apply"),
        Applied::Conflict { current: 2 }
    );
    assert_eq!(
        must_load(&*store, &k, &policy()).await.record.attrs["n"],
        vec![1],
        "a lost CAS must not write"
    );
}

/// Creating over a live record is refused.
pub async fn create_refuses_existing_key<H: Harness>(h: &H) {
    let store = h.store();
    let k = key();
    store
        .create(&k, &record(&[("a", b"1")]), &policy())
        .await
        .expect("create");
    match store.create(&k, &record(&[("a", b"2")]), &policy()).await {
        Err(Error::Conflict) => {}
        other => panic!("create over a live key must be a conflict, got {other:?}"),
    }
    assert_eq!(
        must_load(&*store, &k, &policy()).await.record.attrs["a"],
        b"1".to_vec()
    );
}

/// A delta for a key with no record writes nothing.
pub async fn apply_to_missing_record<H: Harness>(h: &H) {
    let store = h.store();
    let k = key();
    assert_eq!(
        store.apply(&k, &set("a", b"1"), &policy()).await.expect("apply"),
        Applied::Missing
    );
    must_be_gone(&*store, &k, &policy(), "apply must not create a record").await;
}

/// Id rotation as the engine does it: create the record under the new key, delete the old one. The old key is
/// dead afterwards, even for a late writer.
pub async fn id_rotation<H: Harness>(h: &H) {
    let store = h.store();
    let (old, new) = (key(), key());
    let mut r = record(&[("cart", b"3 items")]);
    r.user = Some("user-2".into());
    store.create(&old, &r, &policy()).await.expect("create");
    let loaded = must_load(&*store, &old, &policy()).await;
    store
        .create(&new, &loaded.record, &policy())
        .await
        .expect("create rotated");
    assert!(
        store.delete(&old).await.expect("delete"),
        "the old record existed"
    );
    must_be_gone(&*store, &old, &policy(), "the old key after rotation").await;
    assert_eq!(
        store
            .apply(&old, &set("late", b"x"), &policy())
            .await
            .expect("apply"),
        Applied::Missing
    );
    assert_eq!(
        must_load(&*store, &new, &policy()).await.record,
        r,
        "the data moves to the new key"
    );
    let listed = user_keys(&*store, "user-2", "list").await;
    assert_eq!(listed, vec![new], "the user index follows the rotation");
}

/// Deleting a record (logout) makes it unloadable; deleting twice reports nothing to delete.
pub async fn invalidation<H: Harness>(h: &H) {
    let store = h.store();
    let k = key();
    store
        .create(&k, &record(&[("a", b"1")]), &policy())
        .await
        .expect("create");
    assert!(store.delete(&k).await.expect("delete"));
    must_be_gone(&*store, &k, &policy(), "after delete").await;
    assert!(
        !store.delete(&k).await.expect("delete again"),
        "a second delete finds nothing"
    );
}

/// The user index lists a user's live sessions, follows user changes, drops expired sessions, and revokes all
/// sessions but one.
pub async fn user_index<H: Harness>(h: &H) {
    let store = h.store();
    let short = Policy {
        idle: Duration::from_millis(1000),
        ..policy()
    };
    let keys: Vec<StoreKey> = (0..4).map(|_| key()).collect();
    for (i, k) in keys.iter().enumerate() {
        let mut r = record(&[("device", format!("d{i}").as_bytes())]);
        r.user = Some(if i < 3 { "alice" } else { "bob" }.into());
        let p = if i == 2 { short } else { policy() };
        store.create(k, &r, &p).await.expect("create");
    }
    let anon = key();
    store
        .create(&anon, &record(&[]), &policy())
        .await
        .expect("create anonymous");
    // Signing in later moves a session into the index.
    let login = Delta {
        user: Some(Some("alice".into())),
        ..Delta::default()
    };
    assert!(matches!(
        store.apply(&anon, &login, &policy()).await.expect("apply"),
        Applied::Saved { .. }
    ));
    let alice = user_keys(&*store, "alice", "list").await;
    let mut want = vec![keys[0].clone(), keys[1].clone(), keys[2].clone(), anon.clone()];
    want.sort();
    assert_eq!(alice, want, "alice's sessions");
    // Signing out removes it again.
    let logout = Delta {
        user: Some(None),
        ..Delta::default()
    };
    assert!(matches!(
        store.apply(&anon, &logout, &policy()).await.expect("apply"),
        Applied::Saved { .. }
    ));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let listed = store.list_user("alice", ALL).await.expect("list");
    let mut alice: Vec<StoreKey> = listed.iter().map(|(k, _)| k.clone()).collect();
    alice.sort();
    let mut want = vec![keys[0].clone(), keys[1].clone()];
    want.sort();
    assert_eq!(alice, want, "expired and signed-out sessions leave the index");
    assert!(
        listed.iter().all(|(_, l)| l.record.attrs.contains_key("device")),
        "listings carry the record"
    );
    assert_eq!(
        store.delete_user("alice", Some(&keys[0])).await.expect("revoke"),
        1,
        "one other live session"
    );
    let alice = user_keys(&*store, "alice", "list").await;
    assert_eq!(alice, vec![keys[0].clone()], "only the kept session remains");
    must_be_gone(&*store, &keys[1], &policy(), "a revoked session").await;
    assert_eq!(
        store.list_user("bob", ALL).await.expect("list").len(),
        1,
        "other users are untouched"
    );
    assert_eq!(store.delete_user("alice", None).await.expect("revoke all"), 1);
    assert!(store.list_user("alice", ALL).await.expect("list").is_empty());
}

/// A user's record that cannot be decoded does not break the user index: a listing skips it, and revoking the
/// user's sessions still works (the "your sessions" page and "sign out everywhere" stay usable).
pub async fn user_index_skips_corrupt_records<H: Harness>(h: &H) {
    let store = h.store();
    let (good, bad) = (key(), key());
    for k in [&good, &bad] {
        let mut r = record(&[("a", b"1")]);
        r.user = Some("carol".into());
        store.create(k, &r, &policy()).await.expect("create");
    }
    h.corrupt(&bad).await;
    let listed = user_keys(&*store, "carol", "a corrupt record must not fail the listing").await;
    assert_eq!(
        listed,
        vec![good.clone()],
        "the readable session is listed, the corrupt one skipped"
    );
    store
        .delete_user("carol", None)
        .await
        .expect("a corrupt record must not fail revocation");
    must_be_gone(&*store, &good, &policy(), "a revoked session").await;
    assert!(store.list_user("carol", ALL).await.expect("list").is_empty());
}

/// A record whose bytes cannot be decoded is reported as corrupt, never as a panic or an empty session, and can
/// be deleted and replaced.
pub async fn corrupt_record<H: Harness>(h: &H) {
    let store = h.store();
    let k = key();
    store
        .create(&k, &record(&[("a", b"1")]), &policy())
        .await
        .expect("create");
    h.corrupt(&k).await;
    match store.load(&k, &policy()).await {
        Err(Error::Corrupt(_)) => {}
        other => panic!("a corrupt record must load as Error::Corrupt, got {other:?}"),
    }
    assert!(
        store.delete(&k).await.expect("delete corrupt"),
        "a corrupt record can be deleted"
    );
    store
        .create(&k, &record(&[("a", b"2")]), &policy())
        .await
        .expect("create after corrupt");
    assert_eq!(
        must_load(&*store, &k, &policy()).await.record.attrs["a"],
        b"2".to_vec()
    );
}

/// Records above the size limit are refused on create and on apply, and nothing is written.
pub async fn size_limit<H: Harness>(h: &H) {
    let store = h.store();
    let tight = Policy {
        max_record_bytes: 256,
        ..policy()
    };
    let k = key();
    match store.create(&k, &record(&[("big", &[7; 300])]), &tight).await {
        Err(Error::TooLarge { limit: 256, .. }) => {}
        other => panic!("an oversized create must be refused, got {other:?}"),
    }
    must_be_gone(&*store, &k, &tight, "a refused create").await;
    store
        .create(&k, &record(&[("small", &[1; 100])]), &tight)
        .await
        .expect("create within the limit");
    match store.apply(&k, &set("more", &[2; 200]), &tight).await {
        Err(Error::TooLarge { limit: 256, .. }) => {}
        other => panic!("a delta that grows the record past the limit must be refused, got {other:?}"),
    }
    let loaded = must_load(&*store, &k, &tight).await;
    assert!(
        !loaded.record.attrs.contains_key("more"),
        "a refused delta writes nothing"
    );
    assert_eq!(loaded.version, 1);
}

/// A record of `user` created `age_ms` ago with a one-hour lifetime, so records made with decreasing ages
/// order from oldest to newest by creation time and by deadline alike.
fn aged(user: Option<&str>, age_ms: u64) -> Record {
    let created_at = now_ms() - age_ms;
    Record {
        created_at,
        deadline: created_at + 3_600_000,
        user: user.map(str::to_owned),
        attrs: [("n".to_owned(), vec![1])].into(),
    }
}

fn sorted(keys: &[&StoreKey]) -> Vec<StoreKey> {
    let mut keys: Vec<StoreKey> = keys.iter().map(|k| (*k).clone()).collect();
    keys.sort();
    keys
}

async fn count(store: &dyn SessionStore, user: &str) -> u64 {
    match store.count_user(user).await {
        Ok(n) => n,
        Err(err) => panic!("count_user({user}) failed: {err:?}"),
    }
}

fn sign_in(user: Option<&str>) -> Delta {
    Delta {
        user: Some(user.map(str::to_owned)),
        ..Delta::default()
    }
}

/// With a cap of n, attaching an (n+1)th session to a user deletes the user's oldest session: its record is
/// gone (a load finds nothing), the listing has n. Attaching by a delta (signing in an anonymous session)
/// counts too, and the attached session itself is kept even when it is the oldest. Other users are untouched,
/// and without a cap nothing is evicted.
pub async fn user_cap_evicts_the_oldest<H: Harness>(h: &H) {
    let store = h.store();
    let capped = Policy {
        max_sessions_per_user: NonZeroU32::new(3),
        ..policy()
    };
    let keys: Vec<StoreKey> = (0..4).map(|_| key()).collect();
    let bystander = key();
    store
        .create(&bystander, &aged(Some("frank"), 90_000), &capped)
        .await
        .expect("create another user's session");
    // Created 40, 30 and 20 seconds ago: keys[0] is the oldest.
    for (i, k) in keys.iter().take(3).enumerate() {
        store
            .create(k, &aged(Some("erin"), 40_000 - 10_000 * i as u64), &capped)
            .await
            .expect("create");
    }
    assert_eq!(
        user_keys(&*store, "erin", "list").await,
        sorted(&[&keys[0], &keys[1], &keys[2]]),
        "at the cap nothing is evicted"
    );
    store
        .create(&keys[3], &aged(Some("erin"), 10_000), &capped)
        .await
        .expect("create beyond the cap");
    must_be_gone(&*store, &keys[0], &capped, "the oldest session beyond the cap").await;
    assert_eq!(
        user_keys(&*store, "erin", "list").await,
        sorted(&[&keys[1], &keys[2], &keys[3]]),
        "the cap holds after a create"
    );
    assert_eq!(count(&*store, "erin").await, 3);
    if let Some(entries) = h.index_entries("erin").await {
        assert_eq!(entries, 3, "the evicted session leaves the index");
    }

    // An anonymous session older than all of them signs in: it stays, the oldest other one goes.
    let late = key();
    store
        .create(&late, &aged(None, 60_000), &capped)
        .await
        .expect("create anonymous");
    assert!(matches!(
        store
            .apply(&late, &sign_in(Some("erin")), &capped)
            .await
            .expect("apply"),
        Applied::Saved { .. }
    ));
    assert_eq!(
        must_load(&*store, &late, &capped).await.record.user.as_deref(),
        Some("erin"),
        "the session being signed in is never the one evicted"
    );
    must_be_gone(
        &*store,
        &keys[1],
        &capped,
        "the oldest other session after a sign-in",
    )
    .await;
    assert_eq!(
        user_keys(&*store, "erin", "list").await,
        sorted(&[&keys[2], &keys[3], &late]),
        "the cap holds after a delta that sets the user"
    );
    assert_eq!(
        user_keys(&*store, "frank", "list").await,
        vec![bystander.clone()],
        "another user's sessions are untouched"
    );

    // Without a cap, a fourth session evicts nothing.
    let uncapped = key();
    store
        .create(&uncapped, &aged(Some("erin"), 5_000), &policy())
        .await
        .expect("create without a cap");
    assert_eq!(count(&*store, "erin").await, 4, "no cap, no eviction");
}

/// Deleting a session (sign-out) removes it from the user index, not only the record: the listing and the
/// count drop it, and a store with a separate index holds no entry for it.
pub async fn delete_removes_the_index_entry<H: Harness>(h: &H) {
    let store = h.store();
    let (first, second) = (key(), key());
    for k in [&first, &second] {
        store
            .create(k, &aged(Some("gail"), 1_000), &policy())
            .await
            .expect("create");
    }
    assert!(store.delete(&first).await.expect("delete"), "the record existed");
    // Read the index before anything that lists or counts, since those drop stale members themselves.
    if let Some(entries) = h.index_entries("gail").await {
        assert_eq!(entries, 1, "delete removes the index entry, not only the record");
    }
    assert_eq!(user_keys(&*store, "gail", "list").await, vec![second.clone()]);
    assert_eq!(count(&*store, "gail").await, 1);
    assert!(store.delete(&second).await.expect("delete"));
    if let Some(entries) = h.index_entries("gail").await {
        assert_eq!(entries, 0, "an index emptied by deletes holds nothing");
    }
    assert_eq!(count(&*store, "gail").await, 0);
}

/// `count_user` counts a user's live sessions: not other users', not anonymous ones, not one past its idle
/// timeout, and it follows sign-in, sign-out and delete.
pub async fn count_user_counts_live_sessions<H: Harness>(h: &H) {
    let store = h.store();
    let short = Policy {
        idle: Duration::from_millis(1500),
        ..policy()
    };
    let (a, b, idle, other, anon) = (key(), key(), key(), key(), key());
    for k in [&a, &b] {
        store
            .create(k, &aged(Some("hana"), 1_000), &policy())
            .await
            .expect("create");
    }
    store
        .create(&other, &aged(Some("ivan"), 1_000), &policy())
        .await
        .expect("create");
    store
        .create(&anon, &aged(None, 1_000), &policy())
        .await
        .expect("create");
    store
        .create(&idle, &aged(Some("hana"), 1_000), &short)
        .await
        .expect("create");
    assert_eq!(count(&*store, "hana").await, 3);
    assert_eq!(count(&*store, "ivan").await, 1);
    assert_eq!(count(&*store, "nobody").await, 0);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        count(&*store, "hana").await,
        2,
        "a session past its idle timeout is not counted"
    );
    assert!(matches!(
        store
            .apply(&b, &sign_in(None), &policy())
            .await
            .expect("sign out"),
        Applied::Saved { .. }
    ));
    assert_eq!(
        count(&*store, "hana").await,
        1,
        "a signed-out session is not counted"
    );
    assert!(matches!(
        store
            .apply(&anon, &sign_in(Some("hana")), &policy())
            .await
            .expect("sign in"),
        Applied::Saved { .. }
    ));
    assert_eq!(count(&*store, "hana").await, 2, "a signed-in session is counted");
    assert!(store.delete(&a).await.expect("delete"));
    assert_eq!(
        count(&*store, "hana").await,
        1,
        "a deleted session is not counted"
    );
}

/// `list_user` returns at most its limit, newest first, and skips sessions that ended early instead of
/// returning fewer than it could.
pub async fn listing_is_bounded_newest_first<H: Harness>(h: &H) {
    let store = h.store();
    let keys: Vec<StoreKey> = (0..5).map(|_| key()).collect();
    for (i, k) in keys.iter().enumerate() {
        store
            .create(k, &aged(Some("jo"), 50_000 - 10_000 * i as u64), &policy())
            .await
            .expect("create");
    }
    // The newest of all, but it idles out before the listing.
    let short = Policy {
        idle: Duration::from_millis(1000),
        ..policy()
    };
    let idle = key();
    store
        .create(&idle, &aged(Some("jo"), 1_000), &short)
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let listed = |limit: usize| {
        let store = Arc::clone(&store);
        async move {
            store
                .list_user("jo", limit)
                .await
                .expect("list")
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(2).await,
        vec![keys[4].clone(), keys[3].clone()],
        "the two newest live sessions, newest first"
    );
    assert!(listed(0).await.is_empty(), "a limit of 0 lists nothing");
    let all: Vec<StoreKey> = keys.iter().rev().cloned().collect();
    assert_eq!(listed(ALL).await, all, "every live session, newest first");
}
