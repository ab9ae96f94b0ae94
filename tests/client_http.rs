//! The real client against a real HTTP server on loopback (wiremock).

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use iotda_task_watcher::client::ApiErrorKind;
use iotda_task_watcher::{Credentials, IotdaClient, ProjectId, TaskStatus};
use proptest::prelude::*;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const RUNNING: &str = r#"{"task_id":"075f413d-a3bb-4243-974d-8eb9221c1234","type":"MODIFY","status":"RUNNING","progress":35}"#;

fn header<'a>(req: &'a wiremock::Request, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn sends_one_signed_get_the_way_the_gateway_checks_it() {
    let server = answering(ResponseTemplate::new(200).set_body_string(RUNNING)).await;
    let (instance, task) = ids();
    let got = client(&server.uri())
        .instance_task(&instance, &task)
        .await
        .unwrap();
    assert_eq!(got.status, Some(TaskStatus::Running));
    assert_eq!(got.progress_percent(), Some(35));

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "one call is one request");
    let req = &requests[0];
    assert_eq!(req.method.as_str(), "GET");
    assert_eq!(req.url.path(), task_path());
    assert_eq!(req.url.query(), None);
    assert!(req.body.is_empty());
    let host = server.address().to_string();
    assert_eq!(header(req, "host"), Some(host.as_str()));
    assert_eq!(header(req, "x-project-id"), Some(PROJECT));
    assert_eq!(
        header(req, "user-agent"),
        Some(concat!("iotda-task-watcher/", env!("CARGO_PKG_VERSION")))
    );
    let date = header(req, "x-sdk-date").unwrap();
    let parsed = jiff::fmt::strtime::parse("%Y%m%dT%H%M%SZ", date)
        .and_then(|t| t.to_datetime())
        .expect("X-Sdk-Date is YYYYMMDDTHHMMSSZ");
    let sent = parsed
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp();
    let skew = jiff::Timestamp::now().duration_since(sent).as_secs().abs();
    assert!(
        skew < 120,
        "X-Sdk-Date is the current UTC time, off by {skew}s"
    );
    assert!(header(req, "x-security-token").is_none());
    assert!(header(req, "x-auth-token").is_none());

    let signed = check_wiremock(req, AK, SK).expect("the signature verifies");
    assert_eq!(signed, ["host", "x-project-id", "x-sdk-date"]);
    let auth = header(req, "authorization").unwrap();
    assert!(auth.starts_with(&format!(
        "SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host;x-project-id;x-sdk-date, Signature="
    )));
    // A wrong key does not verify: the check above can fail.
    assert!(check_wiremock(req, AK, "another-secret").is_err());
}

#[tokio::test]
async fn a_security_token_is_sent_and_signed() {
    let server = answering(ResponseTemplate::new(200).set_body_string(RUNNING)).await;
    let (instance, task) = ids();
    let creds = Credentials::aksk(AK, SK).with_security_token(TOKEN);
    client_with(&server.uri(), creds)
        .instance_task(&instance, &task)
        .await
        .unwrap();
    let req = &server.received_requests().await.unwrap()[0];
    assert_eq!(header(req, "x-security-token"), Some(TOKEN));
    let signed = check_wiremock(req, AK, SK).unwrap();
    assert_eq!(
        signed,
        ["host", "x-project-id", "x-sdk-date", "x-security-token"]
    );
}

#[tokio::test]
async fn an_iam_token_goes_in_x_auth_token_without_a_signature() {
    let server = answering(ResponseTemplate::new(200).set_body_string(RUNNING)).await;
    let (instance, task) = ids();
    client_with(&server.uri(), Credentials::iam_token("iam-token-value"))
        .instance_task(&instance, &task)
        .await
        .unwrap();
    let req = &server.received_requests().await.unwrap()[0];
    assert_eq!(header(req, "x-auth-token"), Some("iam-token-value"));
    assert_eq!(header(req, "x-project-id"), Some(PROJECT));
    assert!(header(req, "authorization").is_none());
    assert!(header(req, "x-sdk-date").is_none());
}

#[tokio::test]
async fn the_page_example_arrives_whole() {
    let body = r#"{"task_id":"075f413d-a3bb-4243-974d-8eb9221c1234","type":"MODIFY","status":"PENDING","create_time":"2021-08-19T01:52:49.493Z","start_time":"2021-08-19T01:52:49.492Z","end_time":"2021-08-19T01:52:49.492Z","target_config":{"flavor":{"type":"iotda.standard.s2","size":2}},"operate_window":{"start_time":"18:00","end_time":"22:00"},"progress":80}"#;
    let server = answering(ResponseTemplate::new(200).set_body_string(body)).await;
    let (instance, task) = ids();
    let got = client(&server.uri())
        .instance_task(&instance, &task)
        .await
        .unwrap();
    assert_eq!(serde_json::to_string(&got).unwrap(), body);
}

struct Case {
    status: u16,
    body: &'static str,
    kind: ApiErrorKind,
    code: Option<&'static str>,
    msg: Option<&'static str>,
}

#[tokio::test]
async fn every_error_class_is_typed_and_classified() {
    let cases = [
        Case {
            status: 400,
            body: r#"{"error_code":"IOTDA.000006","error_msg":"Invalid input data."}"#,
            kind: ApiErrorKind::BadRequest,
            code: Some("IOTDA.000006"),
            msg: Some("Invalid input data."),
        },
        Case {
            status: 401,
            body: r#"{"error_code":"APIGW.0301","error_msg":"Incorrect IAM authentication information: verify aksk signature fail"}"#,
            kind: ApiErrorKind::Unauthorized,
            code: Some("APIGW.0301"),
            msg: Some("Incorrect IAM authentication information: verify aksk signature fail"),
        },
        Case {
            status: 403,
            body: r#"{"error_code":"IOTDA.000001","error_msg":"Forbidden."}"#,
            kind: ApiErrorKind::Forbidden,
            code: Some("IOTDA.000001"),
            msg: Some("Forbidden."),
        },
        Case {
            status: 403,
            body: r#"{"error_code":"IOTDA.021101","error_msg":"Request rate limit exceeded."}"#,
            kind: ApiErrorKind::Throttled,
            code: Some("IOTDA.021101"),
            msg: Some("Request rate limit exceeded."),
        },
        Case {
            status: 403,
            body: r#"{"error_code":"IOTDA.021102","error_msg":"Tenant limit."}"#,
            kind: ApiErrorKind::Throttled,
            code: Some("IOTDA.021102"),
            msg: Some("Tenant limit."),
        },
        Case {
            status: 404,
            body: r#"{"code":"APIGW.0101","message":"The API does not exist or has not been published"}"#,
            kind: ApiErrorKind::NotFound,
            code: Some("APIGW.0101"),
            msg: Some("The API does not exist or has not been published"),
        },
        Case {
            status: 429,
            body: r#"{"error_code":"APIGW.0308","error_msg":"The throttling threshold has been reached"}"#,
            kind: ApiErrorKind::Throttled,
            code: Some("APIGW.0308"),
            msg: Some("The throttling threshold has been reached"),
        },
        Case {
            status: 500,
            body: r#"{"error_code":"IOTDA.000000","error_msg":"Internal error"}"#,
            kind: ApiErrorKind::Server,
            code: Some("IOTDA.000000"),
            msg: Some("Internal error"),
        },
        Case {
            status: 502,
            body: "<html>Bad Gateway</html>",
            kind: ApiErrorKind::Server,
            code: None,
            msg: None,
        },
        Case {
            status: 503,
            body: "",
            kind: ApiErrorKind::Server,
            code: None,
            msg: None,
        },
        Case {
            status: 504,
            body: r#"{"error":{"code":"APIGW.0201","message":"Gateway timeout"}}"#,
            kind: ApiErrorKind::Server,
            code: Some("APIGW.0201"),
            msg: Some("Gateway timeout"),
        },
        Case {
            status: 409,
            body: "{}",
            kind: ApiErrorKind::Other,
            code: None,
            msg: None,
        },
    ];
    let server = MockServer::start().await;
    let (instance, task) = ids();
    let client = client(&server.uri());
    for case in cases {
        server.reset().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(case.status)
                    .set_body_string(case.body)
                    .insert_header("X-Request-Id", "req-abc-123"),
            )
            .mount(&server)
            .await;
        let err = client.instance_task(&instance, &task).await.unwrap_err();
        let what = format!("HTTP {} {}", case.status, case.body);
        assert_eq!(err.kind(), case.kind, "{what}");
        assert_eq!(err.is_transient(), case.kind.is_transient(), "{what}");
        assert_eq!(
            err.status().map(|s| s.as_u16()),
            Some(case.status),
            "{what}"
        );
        assert_eq!(err.error_code(), case.code, "{what}");
        assert_eq!(err.error_msg(), case.msg, "{what}");
        assert_eq!(err.request_id(), Some("req-abc-123"), "{what}");
        let shown = err.to_string();
        assert!(
            shown.contains("req-abc-123") && shown.contains(&case.status.to_string()),
            "{shown}"
        );
        if let Some(code) = case.code {
            assert!(shown.contains(code), "{shown}");
        }
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            1,
            "no retries inside the client: {what}"
        );
    }
}

#[tokio::test]
async fn retry_after_in_seconds_and_as_an_http_date() {
    let server = answering(ResponseTemplate::new(429).insert_header("Retry-After", "7")).await;
    let (instance, task) = ids();
    let err = client(&server.uri())
        .instance_task(&instance, &task)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Throttled);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    // The date is read against the answer's own Date header, so clocks need not agree.
    let date = SystemTime::now() - Duration::from_secs(3600);
    let server = answering(
        ResponseTemplate::new(503)
            .insert_header("Date", httpdate::fmt_http_date(date).as_str())
            .insert_header(
                "Retry-After",
                httpdate::fmt_http_date(date + Duration::from_secs(42)).as_str(),
            ),
    )
    .await;
    let err = client(&server.uri())
        .instance_task(&instance, &task)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Server);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(42)));
    assert!(err.server_date().is_some());
}

#[tokio::test]
async fn bodies_that_are_empty_truncated_not_json_or_huge_are_transient_decode_errors() {
    let (instance, task) = ids();
    let huge = format!(
        r#"{{"status":"RUNNING","status_detail":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    for body in [
        String::new(),
        RUNNING[..20].to_owned(),
        "<html>ok</html>".to_owned(),
        "null".to_owned(),
        "[]".to_owned(),
        huge,
    ] {
        let server = answering(
            ResponseTemplate::new(200)
                .set_body_string(body.clone())
                .insert_header("X-Request-Id", "r-9"),
        )
        .await;
        let err = client(&server.uri())
            .instance_task(&instance, &task)
            .await
            .unwrap_err();
        let what: String = body.chars().take(40).collect();
        assert_eq!(err.kind(), ApiErrorKind::Decode, "{what}");
        assert!(err.is_transient());
        assert_eq!(err.request_id(), Some("r-9"));
        assert!(err.detail().is_some(), "{what}");
        assert!(err.to_string().len() < 400, "the error stays short: {err}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_not_read_in_full() {
    let server = answering(ResponseTemplate::new(200).set_body_string("x".repeat(10_000))).await;
    let (instance, task) = ids();
    let client = IotdaClient::builder()
        .endpoint(server.uri())
        .credentials(Credentials::aksk(AK, SK))
        .project_id(ProjectId::new(PROJECT).unwrap())
        .max_body_bytes(1_000)
        .build()
        .unwrap();
    let err = client.instance_task(&instance, &task).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Decode);
    assert!(
        err.detail().unwrap().contains("larger than 1000 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn a_slow_server_is_a_transient_timeout() {
    let server = answering(
        ResponseTemplate::new(200)
            .set_body_string(RUNNING)
            .set_delay(Duration::from_secs(5)),
    )
    .await;
    let (instance, task) = ids();
    let err = client(&server.uri())
        .instance_task_with_timeout(&instance, &task, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Timeout);
    assert!(err.is_transient());
}

#[tokio::test]
async fn connection_refused_is_a_transient_network_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (instance, task) = ids();
    let err = client(&format!("http://127.0.0.1:{port}"))
        .instance_task(&instance, &task)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Network, "{err}");
    assert!(err.is_transient());
    assert!(err.status().is_none());
}

#[tokio::test]
async fn secrets_stay_out_of_debug_and_errors() {
    let server = answering(
        ResponseTemplate::new(401)
            .set_body_string(r#"{"error_code":"APIGW.0301","error_msg":"bad signature"}"#),
    )
    .await;
    let (instance, task) = ids();
    let client = client_with(
        &server.uri(),
        Credentials::aksk(AK, SK).with_security_token(TOKEN),
    );
    let err = client.instance_task(&instance, &task).await.unwrap_err();
    for shown in [format!("{client:?}"), format!("{err}"), format!("{err:?}")] {
        assert!(!shown.contains(SK), "{shown}");
        assert!(!shown.contains(TOKEN), "{shown}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever status and bytes come back, the client answers with a value, never a panic,
    /// and a 2xx that is not a task is a transient decode error.
    #[test]
    fn no_answer_makes_the_client_panic(
        status in prop::sample::select(vec![200u16, 201, 204, 301, 400, 401, 403, 404, 418, 429, 500, 503]),
        body in prop::collection::vec(any::<u8>(), 0..512),
        json in prop::bool::ANY,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let body = if json { serde_json::to_vec(&String::from_utf8_lossy(&body)).unwrap() } else { body };
            let server = answering(ResponseTemplate::new(status).set_body_bytes(body)).await;
            let (instance, task) = ids();
            let result = client(&server.uri()).instance_task(&instance, &task).await;
            if (200..300).contains(&status) {
                if let Err(e) = &result {
                    prop_assert_eq!(e.kind(), ApiErrorKind::Decode);
                }
            } else {
                prop_assert!(result.is_err());
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn ids_stay_one_segment_each_on_the_wire() {
    let server = answering(ResponseTemplate::new(200).set_body_string(RUNNING)).await;
    let (instance, task) = ids();
    let client = client(&server.uri());
    let url = client.task_url(&instance, &task);
    assert_eq!(url.path_segments().unwrap().count(), 7);
    assert_eq!(url.query(), None);
    assert_eq!(url.fragment(), None);
    for hostile in [
        "../../admin",
        "a?b=c",
        "a#b",
        "a/b",
        "%2e%2e",
        "a b",
        "a\\b",
    ] {
        assert!(
            iotda_task_watcher::TaskId::new(hostile).is_err(),
            "{hostile}"
        );
        assert!(
            iotda_task_watcher::InstanceId::new(hostile).is_err(),
            "{hostile}"
        );
    }
}
