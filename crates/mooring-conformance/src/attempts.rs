//! The conformance cases of the [`AttemptStore`] contract (login throttling), run by every store against a
//! real backend through [`attempt_store_suite!`](crate::attempt_store_suite):
//!
//! ```text
//! mooring_conformance::attempt_store_suite!(my_harness().await);
//! ```
//!
//! The expression yields `(guard, Arc<dyn AttemptStore>)`: the guard keeps the backend (a database, a Redis
//! process) alive for the test. Every case uses its own keys, so cases may share a backend.

use std::sync::Arc;
use std::time::Duration;

use mooring::{AttemptKey, AttemptStore};

/// Expands to one `#[tokio::test]` per case of this module; `$harness` is evaluated once per test.
#[macro_export]
macro_rules! attempt_store_suite {
    ($harness:expr) => {
        $crate::attempt_store_suite!(@cases $harness;
            failures_count_within_their_window, a_window_ends_and_counting_restarts,
            blocks_last_their_duration_and_are_never_shortened, reset_forgets_failures_and_block,
            concurrent_failures_all_count, keys_are_independent);
    };
    (@cases $harness:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (_guard, store) = $harness;
                $crate::attempts::$case(store).await;
            }
        )+
    };
}

fn key(case: &str) -> AttemptKey {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).expect("random");
    AttemptKey::new("t", &[case, &format!("{nonce:?}")])
}

/// Failures are counted one by one within a window.
pub async fn failures_count_within_their_window(store: Arc<dyn AttemptStore>) {
    let k = key("count");
    for expected in 1..=4 {
        assert_eq!(
            store
                .record_failure(&k, Duration::from_secs(60))
                .await
                .expect("record"),
            expected
        );
    }
    assert_eq!(
        store.blocked_for(&k).await.expect("blocked_for"),
        None,
        "counting alone blocks nothing"
    );
}

/// Once the window from the first failure has passed, the next failure starts a new window at 1.
pub async fn a_window_ends_and_counting_restarts(store: Arc<dyn AttemptStore>) {
    let k = key("window");
    let window = Duration::from_millis(600);
    assert_eq!(store.record_failure(&k, window).await.expect("record"), 1);
    assert_eq!(store.record_failure(&k, window).await.expect("record"), 2);
    tokio::time::sleep(window + Duration::from_millis(300)).await;
    assert_eq!(
        store.record_failure(&k, window).await.expect("record"),
        1,
        "a new window"
    );
}

/// A block lasts its duration; a shorter block later does not shorten it, a longer one extends it.
pub async fn blocks_last_their_duration_and_are_never_shortened(store: Arc<dyn AttemptStore>) {
    let k = key("block");
    assert_eq!(store.blocked_for(&k).await.expect("blocked_for"), None);
    store.block(&k, Duration::from_secs(3)).await.expect("block");
    let left = store
        .blocked_for(&k)
        .await
        .expect("blocked_for")
        .expect("blocked");
    assert!(
        left > Duration::from_secs(2) && left <= Duration::from_secs(3),
        "{left:?}"
    );
    store.block(&k, Duration::from_millis(100)).await.expect("block");
    let left = store
        .blocked_for(&k)
        .await
        .expect("blocked_for")
        .expect("still blocked");
    assert!(
        left > Duration::from_secs(2),
        "a shorter block does not shorten it: {left:?}"
    );
    store.block(&k, Duration::from_secs(20)).await.expect("block");
    let left = store
        .blocked_for(&k)
        .await
        .expect("blocked_for")
        .expect("blocked");
    assert!(
        left > Duration::from_secs(19),
        "a longer block extends it: {left:?}"
    );

    let short = key("short block");
    store
        .block(&short, Duration::from_millis(300))
        .await
        .expect("block");
    assert!(store.blocked_for(&short).await.expect("blocked_for").is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store.blocked_for(&short).await.expect("blocked_for"),
        None,
        "the block has ended"
    );
}

/// A reset forgets both the failures and the block.
pub async fn reset_forgets_failures_and_block(store: Arc<dyn AttemptStore>) {
    let k = key("reset");
    for _ in 0..3 {
        store
            .record_failure(&k, Duration::from_secs(60))
            .await
            .expect("record");
    }
    store.block(&k, Duration::from_secs(60)).await.expect("block");
    store.reset(&k).await.expect("reset");
    assert_eq!(store.blocked_for(&k).await.expect("blocked_for"), None);
    assert_eq!(
        store
            .record_failure(&k, Duration::from_secs(60))
            .await
            .expect("record"),
        1
    );
    store
        .reset(&key("never used"))
        .await
        .expect("resetting an unknown key is fine");
}

/// Failures recorded at the same time (as by many replicas) all count.
pub async fn concurrent_failures_all_count(store: Arc<dyn AttemptStore>) {
    let k = key("concurrent");
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            let k = k.clone();
            tokio::spawn(async move { store.record_failure(&k, Duration::from_secs(60)).await })
        })
        .collect();
    let mut highest = 0;
    for call in calls {
        highest = highest.max(call.await.expect("task").expect("record"));
    }
    assert_eq!(highest, 20, "the last of 20 concurrent failures sees 20");
    assert_eq!(
        store
            .record_failure(&k, Duration::from_secs(60))
            .await
            .expect("record"),
        21
    );
}

/// Counts and blocks of one key do not leak into another.
pub async fn keys_are_independent(store: Arc<dyn AttemptStore>) {
    let (a, b) = (key("a"), key("b"));
    store
        .record_failure(&a, Duration::from_secs(60))
        .await
        .expect("record");
    store
        .record_failure(&a, Duration::from_secs(60))
        .await
        .expect("record");
    store.block(&a, Duration::from_secs(60)).await.expect("block");
    assert_eq!(
        store
            .record_failure(&b, Duration::from_secs(60))
            .await
            .expect("record"),
        1
    );
    assert_eq!(store.blocked_for(&b).await.expect("blocked_for"), None);
    store.reset(&b).await.expect("reset");
    assert!(
        store.blocked_for(&a).await.expect("blocked_for").is_some(),
        "resetting b leaves a blocked"
    );
}
