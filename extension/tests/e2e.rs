//! End-to-end tests: the real extension and a real function binary on a
//! local Lambda platform. See `common/mod.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{LONG, Options, Platform, assert_schema_valid};
use serde_json::json;

/// Documents recorded in an invocation reach the daemon before the extension
/// calls `next`: once the platform has frozen both processes, they are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_reach_daemon_before_next() {
    let platform = Platform::start(Options::default()).await;
    for round in 1..=3 {
        let (_, response) = platform.invoke(json!({"docs": 5, "echo": round})).await;
        assert_eq!(response, json!({"sent": 5, "echo": round}));
        platform.sim.wait_for_frozen(LONG).await.unwrap();
        // Frozen: nothing more can be sent, so whatever is due must be there.
        assert!(
            platform.daemon.wait_for(5 * round, Duration::from_secs(5)).await,
            "round {round}: only {} documents before the freeze",
            platform.daemon.count()
        );
    }
    let counters = platform.shutdown().await.unwrap();
    assert_eq!(counters["received"], 15);
    assert_eq!(counters["dropped"], 0);
}
