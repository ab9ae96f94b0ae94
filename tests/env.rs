//! Configuration from the official SDK variables. One test, so that nothing else in this process
//! reads the environment while it changes.

use iotda_task_watcher::client::endpoint::{Endpoint, EndpointError};
use iotda_task_watcher::env::EnvError;
use iotda_task_watcher::{Credentials, IotdaClient, ProjectId};

#[test]
fn reads_the_official_variables() {
    for v in [
        "HUAWEICLOUD_SDK_AK",
        "HUAWEICLOUD_SDK_SK",
        "HUAWEICLOUD_SDK_SECURITY_TOKEN",
        "HUAWEICLOUD_SDK_PROJECT_ID",
    ] {
        std::env::remove_var(v);
    }
    assert_eq!(
        Credentials::from_env().unwrap_err(),
        EnvError::Missing("HUAWEICLOUD_SDK_AK")
    );
    std::env::set_var("HUAWEICLOUD_SDK_AK", "env-ak");
    assert_eq!(
        Credentials::from_env().unwrap_err(),
        EnvError::Missing("HUAWEICLOUD_SDK_SK")
    );
    std::env::set_var("HUAWEICLOUD_SDK_SK", "  ");
    assert_eq!(
        Credentials::from_env().unwrap_err(),
        EnvError::Missing("HUAWEICLOUD_SDK_SK")
    );
    std::env::set_var("HUAWEICLOUD_SDK_SK", "env-sk-secret");
    assert_eq!(
        Credentials::from_env().unwrap(),
        Credentials::aksk("env-ak", "env-sk-secret")
    );
    std::env::set_var("HUAWEICLOUD_SDK_SECURITY_TOKEN", "env-token-secret");
    let creds = Credentials::from_env().unwrap();
    assert_eq!(
        creds,
        Credentials::aksk("env-ak", "env-sk-secret").with_security_token("env-token-secret")
    );
    assert!(!format!("{creds:?}").contains("secret"));

    assert_eq!(
        ProjectId::from_env().unwrap_err(),
        EnvError::Missing("HUAWEICLOUD_SDK_PROJECT_ID")
    );
    std::env::set_var("HUAWEICLOUD_SDK_PROJECT_ID", "../admin");
    let err = ProjectId::from_env().unwrap_err();
    assert!(matches!(err, EnvError::InvalidProjectId(_)));
    assert!(
        err.to_string()
            .starts_with("environment variable HUAWEICLOUD_SDK_PROJECT_ID: invalid project id"),
        "{err}"
    );
    std::env::set_var(
        "HUAWEICLOUD_SDK_PROJECT_ID",
        "0123456789abcdef0123456789abcdef",
    );
    assert_eq!(
        ProjectId::from_env().unwrap().as_str(),
        "0123456789abcdef0123456789abcdef"
    );

    // The official endpoint override, also for a region outside the table.
    std::env::set_var(
        "HUAWEICLOUD_SDK_REGION_IOTDM_CN_NORTH_4",
        "https://iotda-mgmt.internal.example:8443",
    );
    assert_eq!(
        Endpoint::for_region("cn-north-4").unwrap().to_string(),
        "https://iotda-mgmt.internal.example:8443"
    );
    std::env::set_var(
        "HUAWEICLOUD_SDK_REGION_IOTDM_XX_TEST_1",
        "http://127.0.0.1:9",
    );
    let client = IotdaClient::builder()
        .region("xx-test-1")
        .credentials(Credentials::from_env().unwrap())
        .project_id(ProjectId::from_env().unwrap())
        .build()
        .unwrap();
    assert_eq!(client.endpoint().to_string(), "http://127.0.0.1:9");
    std::env::set_var(
        "HUAWEICLOUD_SDK_REGION_IOTDM_XX_TEST_2",
        "http://203.0.113.7",
    );
    let err = Endpoint::for_region("xx-test-2").unwrap_err();
    assert!(
        matches!(&err, EndpointError::Override { variable, .. } if variable == "HUAWEICLOUD_SDK_REGION_IOTDM_XX_TEST_2")
    );
    // The message names the variable; its source says what is wrong with the value.
    assert_eq!(err.to_string(), "HUAWEICLOUD_SDK_REGION_IOTDM_XX_TEST_2");
    let why = std::error::Error::source(&err).expect("the reason is the source");
    assert!(why.to_string().contains("https is required"), "{why}");
}
