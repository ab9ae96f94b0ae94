//! Property fuzzing of everything that reads bytes from outside: the response decoder, the
//! error-body parser, `Retry-After`, and the signer's canonicalization. Each target runs a few
//! hundred random inputs in every `cargo test`; with `FUZZ_SECONDS=N` each keeps drawing fresh
//! random inputs for N seconds:
//!
//! ```sh
//! FUZZ_SECONDS=300 cargo test --release --lib fuzz -- --test-threads 2 --nocapture
//! ```
//!
//! (cargo-fuzz needs a nightly toolchain; this runs on stable.) Inputs that ever failed are kept
//! below as regression tests.

use std::fmt::Debug;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use url::Url;

use crate::client::answer::decode_task;
use crate::client::error::{parse_error_body, parse_retry_after};
use crate::client::signer::{self, SignRequest};

/// Runs `check` on inputs from `strategy`: 512 of them, or fresh batches for `FUZZ_SECONDS`.
fn fuzz<S>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let seconds: Option<u64> = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    let batch = if seconds.is_some() { 20_000 } else { 512 };
    let started = Instant::now();
    let mut cases = 0u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases: batch,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(failure) = runner.run(&strategy, &check) {
            panic!("{name}: {failure}");
        }
        cases += u64::from(batch);
        if seconds.is_none_or(|s| started.elapsed() >= Duration::from_secs(s)) {
            break;
        }
    }
    eprintln!(
        "{name}: {cases} cases in {:.0?}, no failure",
        started.elapsed()
    );
}

const EXAMPLE: &str = r#"{"task_id":"075f413d-a3bb-4243-974d-8eb9221c1234","type":"MODIFY","status":"PENDING","create_time":"2021-08-19T01:52:49.493Z","start_time":"2021-08-19T01:52:49.492Z","end_time":"2021-08-19T01:52:49.492Z","target_config":{"flavor":{"type":"iotda.standard.s2","size":2},"charge_mode":"prePaid"},"operate_window":{"start_time":"18:00","end_time":"22:00"},"progress":80}"#;

/// Bytes shaped like answers: random bytes, the page's example with bytes flipped, inserted or
/// cut, and JSON objects with the API's field names and random values.
fn answer_bytes() -> impl Strategy<Value = Vec<u8>> {
    let keys = prop::sample::select(vec![
        "task_id",
        "type",
        "status",
        "status_detail",
        "create_time",
        "start_time",
        "end_time",
        "target_config",
        "flavor",
        "size",
        "charge_mode",
        "operate_window",
        "progress",
        "error_code",
        "error_msg",
        "code",
        "message",
        "error",
    ]);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    let json = leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..10).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    });
    let mutated = (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(edits, cut)| {
            let mut bytes = EXAMPLE.as_bytes().to_vec();
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len().max(1));
                match kind {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i.min(bytes.len()), byte),
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
            }
            let keep = cut.index(bytes.len() + 1);
            if keep > bytes.len() / 2 {
                bytes.truncate(keep);
            }
            bytes
        });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        json.prop_map(|v| serde_json::to_vec(&v).unwrap()),
        mutated,
    ]
}

#[test]
fn fuzz_the_task_decoder() {
    fuzz("decoder", answer_bytes(), |bytes| {
        if let Ok(task) = decode_task(&bytes) {
            prop_assert_eq!(bytes.trim_ascii_start().first(), Some(&b'{'));
            // Whatever decoded serializes, and reads back as the same task.
            let again = serde_json::to_vec(&task).unwrap();
            prop_assert_eq!(decode_task(&again).unwrap(), task);
        }
        Ok(())
    });
}

#[test]
fn fuzz_the_error_body_parser() {
    fuzz("error body", answer_bytes(), |bytes| {
        let (code, msg) = parse_error_body(&bytes);
        for text in [code, msg].into_iter().flatten() {
            prop_assert!(!text.is_empty());
        }
        Ok(())
    });
}

#[test]
fn fuzz_retry_after() {
    let value = prop_oneof![
        ".{0,40}",
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..4_000_000_000)
            .prop_map(|s| httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(s))),
        "[A-Za-z]{3}, [0-9]{1,2} [A-Za-z]{3} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
    ];
    fuzz(
        "retry-after",
        (value, 0u64..4_000_000_000),
        |(value, now)| {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
            if let Some(wait) = parse_retry_after(&value, now) {
                prop_assert!(wait <= Duration::from_secs(86_400));
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_the_signers_canonicalization() {
    let header = ("[A-Za-z_-]{1,20}", ".{0,40}");
    let input = (
        ".{0,80}",
        ".{0,80}",
        prop::collection::vec(header, 0..6),
        prop::collection::vec(any::<u8>(), 0..256),
    );
    fuzz("signer", input, |(path, query, headers, body)| {
        let mut url = Url::parse("https://iotda-mgmt.cn-north-4.myhuaweicloud.com/").unwrap();
        url.set_path(&path);
        url.set_query(Some(&query));
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let request = SignRequest {
            method: "GET",
            url: &url,
            headers: &headers,
            body: &body,
        };
        let canonical = signer::canonical_request(&request);
        prop_assert!(canonical.starts_with("GET\n/"));
        let uri = signer::canonical_uri(url.path());
        prop_assert!(uri.ends_with('/'));
        prop_assert!(
            uri.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~%/".contains(&b)),
            "{}",
            uri
        );
        prop_assert_eq!(
            signer::canonical_uri(&uri),
            uri.clone(),
            "canonical once is canonical"
        );
        let q = signer::canonical_query(&url);
        prop_assert!(
            q.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~%=&".contains(&b)),
            "{}",
            q
        );
        let auth = signer::authorization("AK", "SK", &request);
        let (ak, _, signature) = signer::parse_authorization(&auth).expect("our own header parses");
        prop_assert_eq!(ak, "AK");
        prop_assert_eq!(signature.len(), 64);
        Ok(())
    });
}
