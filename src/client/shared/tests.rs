//! The link's parts that need no server: URLs, keys, the sane wait, a refused connection.

use super::*;

#[test]
fn urls_are_shown_without_their_credentials() {
    for (url, shown) in [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@host:1/2", "redis://host:1/2"),
        ("rediss://user:pw@host/", "rediss://host/"),
        ("not a url :pw@host", "<credentials>@host"),
    ] {
        assert_eq!(redact(url), shown);
    }
    for bad in [
        "http://host/",
        "redis://",
        "nonsense",
        "redis://:pw@/",
        "redis:/:pw@host:6379",
        "redis:pw@host",
        "redis:///:pw@host",
    ] {
        let error = SharedBudget::redis(bad).unwrap_err().to_string();
        assert!(error.contains("not a Redis URL"), "{error}");
        assert!(!error.contains("pw"), "{error}");
    }
}

#[test]
fn both_keys_carry_one_hash_tag() {
    let shared = SharedBudget::redis("redis://localhost").unwrap();
    assert_eq!(
        shared.keys("p1"),
        ["iotda-budget:{p1}", "iotda-budget:{p1}:members"]
    );
    let scoped = shared.clone().scope("a{b}c");
    assert_eq!(scoped.keys("p1")[0], "iotda-budget:{abc}");
    // An empty tag is no tag on a cluster: the keys would fall in different slots.
    for empty in ["", "{}", "}{"] {
        let scoped = shared.clone().scope(empty);
        assert_eq!(
            scoped.keys("p1")[1],
            "iotda-budget:{p1}:members",
            "{empty:?}"
        );
    }
}

#[test]
fn a_booked_wait_is_sane_up_to_the_longest_pause_and_two_turns_of_every_member() {
    let config = SharedBudget::redis("redis://localhost").unwrap();
    // Every 10 s at the slowest: 8 members take 160 s in two turns.
    let slow = Shared::new(config.clone(), "t", &[(0.1, 1.0), (5.0, 5.0)], true);
    assert_eq!(slow.most_wait(8), Duration::from_secs(30 + 160));
    // The adaptive limiter's floor, half a request a second, is the slowest otherwise.
    let fast = Shared::new(config, "t", &[(5.0, 5.0)], false);
    assert_eq!(fast.most_wait(1), Duration::from_secs(30 + 4));
    assert_eq!(fast.most_wait(0), fast.most_wait(1));
}

#[tokio::test]
async fn a_probe_too_far_off_to_be_an_instant_falls_back_without_panicking() {
    // Nothing listens on port 1 of loopback: the connection is refused.
    let config = SharedBudget::redis("redis://127.0.0.1:1")
        .unwrap()
        .probe_every(Duration::MAX);
    let shared = Shared::new(config, "test", &[], true);
    assert!(shared.book().await.is_none());
    assert!(!shared.joined());
    assert_eq!(shared.decide(Instant::now()), Decision::Local);
    let tomorrow = Instant::now() + Duration::from_secs(86_401);
    assert_eq!(shared.decide(tomorrow), Decision::Ask);
}
