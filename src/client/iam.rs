//! The project id looked up from IAM by region: `GET {iam}/v3/projects?name={region}`, signed.

use std::time::{Duration, SystemTime};

use reqwest::header::HOST;
use serde::Deserialize;
use url::Url;

use super::builder::BuildError;
use super::keys::Signing;
use super::{ascii_value, USER_AGENT};
use crate::env::{var, ENV_IAM_ENDPOINT};
use crate::ids::ProjectId;

#[derive(Deserialize)]
struct Projects {
    #[serde(default)]
    projects: Vec<Project>,
}

#[derive(Deserialize)]
struct Project {
    id: String,
    #[serde(default)]
    name: String,
}

/// The IAM endpoint: `HUAWEICLOUD_SDK_IAM_ENDPOINT`, else the region's.
fn endpoint(region: &str) -> String {
    var(ENV_IAM_ENDPOINT)
        .unwrap_or_else(|_| format!("https://iam.{region}.myhuaweicloud.com"))
        .trim_end_matches('/')
        .to_owned()
}

/// The id of the project named `region`, asked of IAM with `keys`; an error in words when
/// IAM names none or several, or cannot be asked.
pub(super) async fn project_id(region: &str, keys: &Signing) -> Result<ProjectId, BuildError> {
    let refused = BuildError::ProjectLookup;
    let base = endpoint(region);
    let mut url = Url::parse(&format!("{base}/v3/projects"))
        .map_err(|e| refused(format!("the IAM endpoint {base:?} is not a URL: {e}")))?;
    url.query_pairs_mut().append_pair("name", region);
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(refused(format!("the IAM endpoint {base:?} has no host"))),
    };
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(HOST, ascii_value(host.clone()));
    keys.authorize(
        "GET",
        &url,
        SystemTime::now(),
        &[("host", host.as_str())],
        &mut headers,
    );
    let request = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(BuildError::Http)?
        .get(url.clone())
        .headers(headers);
    let response = request.send().await.map_err(|e| {
        BuildError::Unavailable(format!(
            "IAM at {base} did not answer the look-up of project {region:?}: {}",
            e.without_url()
        ))
    })?;
    let status = response.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(BuildError::Unavailable(format!(
            "IAM at {base} could not look up project {region:?} now (HTTP {})",
            status.as_u16()
        )));
    }
    if !status.is_success() {
        return Err(refused(format!(
            "IAM at {base} refused the look-up of project {region:?} (HTTP {})",
            status.as_u16()
        )));
    }
    let projects: Projects = response.json().await.map_err(|e| {
        refused(format!(
            "IAM's answer is not a list of projects: {}",
            e.without_url()
        ))
    })?;
    let mut named = projects
        .projects
        .into_iter()
        .filter(|p| p.name.is_empty() || p.name == region);
    match (named.next(), named.next()) {
        (Some(project), None) => ProjectId::new(project.id).map_err(|e| {
            refused(format!(
                "IAM named project {region:?} with an invalid id: {e}"
            ))
        }),
        (None, _) => Err(refused(format!(
            "IAM knows no project named {region:?} for these credentials"
        ))),
        (Some(_), Some(_)) => Err(refused(format!(
            "IAM names several projects {region:?}: give the project id"
        ))),
    }
}
