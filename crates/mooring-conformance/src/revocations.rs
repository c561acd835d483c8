//! The conformance cases of the [`RevocationLog`] contract (the records a store ended, looked up by a
//! restore), run by every log against a real backend through
//! [`revocation_log_suite!`](crate::revocation_log_suite):
//!
//! ```text
//! mooring_conformance::revocation_log_suite!(retention => my_harness(retention).await);
//! ```
//!
//! The expression is evaluated once per test with `retention` bound to the [`Duration`] the case needs
//! ([`retention`]: short for the expiry cases), and yields `(guard, Arc<dyn RevocationLog>)`: the guard keeps
//! the backend (a database) alive for the test. Every case uses its own keys, so cases may share a backend.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mooring::revocation::{MAX_BATCH, MAX_KEY_LEN};
use mooring::{Error, RevocationLog};

/// Expands to one `#[tokio::test]` per case of this module. `$retention` names the retention the case wants,
/// in scope for `$harness`, which is evaluated once per test.
#[macro_export]
macro_rules! revocation_log_suite {
    ($retention:ident => $harness:expr) => {
        $crate::revocation_log_suite!(@cases $retention => $harness;
            recorded_keys_are_found, recording_again_renews_an_entry, entries_expire_after_the_retention,
            batch_limits_are_refused, keys_are_compared_exactly, concurrent_records_all_land);
    };
    (@cases $retention:ident => $harness:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let $retention = $crate::revocations::retention(stringify!($case));
                let (_guard, log) = $harness;
                $crate::revocations::$case(log).await;
            }
        )+
    };
}

/// Retention of the renewal case: long enough for two round trips on a loaded machine, short enough to wait.
const RENEW_RETENTION: Duration = Duration::from_millis(2500);
/// Retention of the expiry case.
const EXPIRY_RETENTION: Duration = Duration::from_millis(700);
/// Retention of every other case: nothing expires while it runs.
const LONG_RETENTION: Duration = Duration::from_secs(3600);

/// The retention the log of a case must keep entries for.
pub fn retention(case: &str) -> Duration {
    match case {
        "recording_again_renews_an_entry" => RENEW_RETENTION,
        "entries_expire_after_the_retention" => EXPIRY_RETENTION,
        _ => LONG_RETENTION,
    }
}

/// A prefix no other case (or run) uses, in the shape of a Redis key.
fn prefix(case: &str) -> String {
    let mut nonce = [0u8; 6];
    getrandom::fill(&mut nonce).expect("random");
    let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    format!("t{hex}:{case}:")
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn set(keys: &[String]) -> HashSet<String> {
    keys.iter().cloned().collect()
}

async fn find(log: &dyn RevocationLog, keys: &[String]) -> HashSet<String> {
    log.find(keys).await.expect("find")
}

fn assert_refused(result: Result<impl std::fmt::Debug, Error>, what: &str) {
    match result {
        Err(Error::Store(_)) => {}
        other => panic!("{what} must be refused with a store error, got {other:?}"),
    }
}

/// Recorded keys are found, others are not; empty batches are no-ops.
pub async fn recorded_keys_are_found(log: Arc<dyn RevocationLog>) {
    let p = prefix("found");
    let all = keys(&p, 5);
    assert!(find(&*log, &all).await.is_empty(), "a fresh log holds none");
    log.record(&all[..3]).await.expect("record");
    assert_eq!(find(&*log, &all).await, set(&all[..3]));
    assert_eq!(find(&*log, &all[3..]).await, HashSet::new());
    assert_eq!(find(&*log, &all[1..2]).await, set(&all[1..2]), "a batch of one");
    log.record(&[]).await.expect("recording nothing is fine");
    assert!(
        find(&*log, &[]).await.is_empty(),
        "looking up nothing finds nothing"
    );
    log.record(&[all[0].clone(), all[0].clone(), all[4].clone()])
        .await
        .expect("a key twice in one batch");
    assert_eq!(
        find(&*log, &[all[0].clone(), all[4].clone(), all[4].clone()]).await,
        set(&[all[0].clone(), all[4].clone()])
    );
}

/// Recording a key again starts its retention anew.
pub async fn recording_again_renews_an_entry(log: Arc<dyn RevocationLog>) {
    let p = prefix("renew");
    let (renewed, once) = (format!("{p}renewed"), format!("{p}once"));
    let both = [renewed.clone(), once.clone()];
    log.record(&both).await.expect("record");
    tokio::time::sleep(RENEW_RETENTION / 2 + Duration::from_millis(300)).await;
    log.record(std::slice::from_ref(&renewed)).await.expect("renew");
    tokio::time::sleep(RENEW_RETENTION / 2 + Duration::from_millis(300)).await;
    assert_eq!(
        find(&*log, &both).await,
        set(std::slice::from_ref(&renewed)),
        "past the first retention only the renewed entry is left"
    );
    tokio::time::sleep(RENEW_RETENTION / 2 + Duration::from_millis(300)).await;
    assert!(
        find(&*log, &both).await.is_empty(),
        "the renewed entry expires one retention after its renewal"
    );
}

/// Entries are gone after the retention; `delete_expired` removes them, and a key can be recorded again.
pub async fn entries_expire_after_the_retention(log: Arc<dyn RevocationLog>) {
    let p = prefix("expiry");
    let all = keys(&p, 3);
    log.record(&all).await.expect("record");
    assert_eq!(find(&*log, &all).await, set(&all), "found within the retention");
    tokio::time::sleep(EXPIRY_RETENTION + Duration::from_millis(400)).await;
    assert!(
        find(&*log, &all).await.is_empty(),
        "expired entries are not found"
    );
    let deleted = log.delete_expired().await.expect("delete_expired");
    assert!(
        deleted >= 3,
        "the three expired entries are deleted, not {deleted}"
    );
    assert_eq!(
        log.delete_expired().await.expect("delete_expired"),
        0,
        "nothing is left to delete"
    );
    log.record(&all[..1]).await.expect("record again");
    assert_eq!(find(&*log, &all).await, set(&all[..1]), "recorded anew");
}

/// More than [`MAX_BATCH`] keys, an empty key or one longer than [`MAX_KEY_LEN`] bytes are refused, by both
/// calls; the limits themselves are accepted.
pub async fn batch_limits_are_refused(log: Arc<dyn RevocationLog>) {
    let p = prefix("limits");
    let too_many = keys(&p, MAX_BATCH + 1);
    assert_refused(log.record(&too_many).await, "recording 501 keys");
    assert_refused(log.find(&too_many).await, "looking up 501 keys");
    assert!(
        find(&*log, &too_many[..MAX_BATCH]).await.is_empty(),
        "a refused batch records nothing"
    );
    for bad in [String::new(), "k".repeat(MAX_KEY_LEN + 1)] {
        let batch = [format!("{p}fine"), bad.clone()];
        assert_refused(
            log.record(&batch).await,
            &format!("recording a {}-byte key", bad.len()),
        );
        assert_refused(
            log.find(&batch).await,
            &format!("looking up a {}-byte key", bad.len()),
        );
    }
    assert!(
        find(&*log, &[format!("{p}fine")]).await.is_empty(),
        "a batch with one bad key records none of it"
    );

    let full = keys(&p, MAX_BATCH);
    log.record(&full).await.expect("a full batch");
    assert_eq!(find(&*log, &full).await, set(&full), "all 500 found");
    // 255 bytes, 127 of them two-byte characters: the limit is in bytes, and the backend must hold them all.
    let longest = format!("{p}{}", "é".repeat((MAX_KEY_LEN - p.len()) / 2));
    let longest = format!("{longest}{}", "x".repeat(MAX_KEY_LEN - longest.len()));
    assert_eq!(longest.len(), MAX_KEY_LEN);
    log.record(std::slice::from_ref(&longest))
        .await
        .expect("a key of the longest length");
    assert_eq!(
        find(&*log, std::slice::from_ref(&longest)).await,
        set(std::slice::from_ref(&longest))
    );
}

/// Keys are compared byte for byte: no case folding, no trailing-space padding, no Unicode normalization or
/// collation equivalences.
pub async fn keys_are_compared_exactly(log: Arc<dyn RevocationLog>) {
    let p = prefix("exact");
    let recorded = [
        format!("{p}AbC"),
        format!("{p}caf\u{e9}"),
        format!("{p}stra\u{df}e"),
        format!("{p}\u{1f511}"),
    ];
    log.record(&recorded).await.expect("record");
    let lookalikes = [
        format!("{p}abc"),
        format!("{p}ABC"),
        format!("{p}AbC "),
        format!("{p}AbCd"),
        format!("{p}Ab"),
        format!("{p}cafe\u{301}"),
        format!("{p}CAF\u{c9}"),
        format!("{p}cafe"),
        format!("{p}strasse"),
        format!("{p}\u{1f512}"),
    ];
    assert!(
        find(&*log, &lookalikes).await.is_empty(),
        "none of the look-alikes matches: {:?}",
        find(&*log, &lookalikes).await
    );
    let mut mixed: Vec<String> = lookalikes.to_vec();
    mixed.extend(recorded.iter().cloned());
    assert_eq!(
        find(&*log, &mixed).await,
        set(&recorded),
        "exactly the recorded keys, returned as recorded"
    );
}

/// Records from many tasks at once (many replicas signing users out), with overlapping batches, all land.
pub async fn concurrent_records_all_land(log: Arc<dyn RevocationLog>) {
    let p = prefix("concurrent");
    let shared = keys(&format!("{p}shared-"), 40);
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let log = Arc::clone(&log);
            let mut batch = keys(&format!("{p}own{t}-"), 10);
            // Every task also records the shared keys, half of them in reverse order.
            if t % 2 == 0 {
                batch.extend(shared.iter().cloned());
            } else {
                batch.extend(shared.iter().rev().cloned());
            }
            tokio::spawn(async move {
                for _ in 0..3 {
                    log.record(&batch).await?;
                }
                Ok::<_, Error>(batch)
            })
        })
        .collect();
    let mut expected = HashSet::new();
    for task in tasks {
        let batch = task.await.expect("task").expect("a concurrent record");
        expected.extend(batch);
    }
    let expected: Vec<String> = expected.into_iter().collect();
    assert_eq!(expected.len(), 16 * 10 + 40);
    assert_eq!(
        find(&*log, &expected).await,
        set(&expected),
        "every key of every task is found"
    );
}
