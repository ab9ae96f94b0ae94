//! The services that hand out temporary credentials (ECS metadata, CCE Pod Identity, STS, IAM)
//! and IAM's project look-up; the keys they issue are accepted until they expire.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use wiremock::{Request, ResponseTemplate};

/// How the simulator's ECS metadata service answers a request for the instance's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Metadata {
    /// The instance has an agency: temporary keys.
    #[default]
    Agency,
    /// The instance has no agency: 401 with the service's message, "Please configure Cloud
    /// Service Agency first".
    NoAgency,
    /// 401 without that message (as for an expired session token), every time.
    Unauthorized,
}

/// How the simulator writes the expiry of the keys it issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExpiryStyle {
    /// With six fractional digits, as ECS shows it: `2020-01-08T03:50:07.574000Z`.
    #[default]
    Micros,
    /// Whole seconds: `2020-01-08T03:50:07Z`.
    Seconds,
    /// Not a time at all.
    Malformed,
}

/// Keys the simulator issued.
struct Issued {
    sk: String,
    token: String,
    expires_at: SystemTime,
}

/// The credential services' state.
pub(super) struct Issuer {
    lifetime: Mutex<Duration>,
    issued: Mutex<HashMap<String, Issued>>,
    next: AtomicU64,
    metadata: Mutex<Metadata>,
    style: Mutex<ExpiryStyle>,
    /// How many of the next requests for keys fail with 503.
    failing: AtomicU32,
    /// Keys handed out, by any route.
    fetches: AtomicU64,
    /// When keys were asked for, failures included.
    attempts: Mutex<Vec<SystemTime>>,
    /// Project names and ids IAM knows.
    projects: Mutex<Vec<(String, String)>>,
}

/// The session token of the metadata service.
const SESSION_TOKEN: &str = "simulator-metadata-session";
/// The IAM token a federated identity gets.
const SUBJECT_TOKEN: &str = "simulator-subject-token";

impl Issuer {
    pub(super) fn new(project: (String, String)) -> Self {
        Self {
            lifetime: Mutex::new(Duration::from_secs(3600)),
            issued: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            metadata: Mutex::new(Metadata::default()),
            style: Mutex::new(ExpiryStyle::default()),
            failing: AtomicU32::new(0),
            fetches: AtomicU64::new(0),
            attempts: Mutex::new(Vec::new()),
            projects: Mutex::new(vec![project]),
        }
    }

    pub(super) fn set_lifetime(&self, lifetime: Duration) {
        *lock(&self.lifetime) = lifetime;
    }

    pub(super) fn set_metadata(&self, metadata: Metadata) {
        *lock(&self.metadata) = metadata;
    }

    pub(super) fn set_expiry_style(&self, style: ExpiryStyle) {
        *lock(&self.style) = style;
    }

    pub(super) fn fail_next(&self, n: u32) {
        self.failing.store(n, Ordering::Relaxed);
    }

    pub(super) fn set_projects(&self, projects: Vec<(String, String)>) {
        *lock(&self.projects) = projects;
    }

    pub(super) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    pub(super) fn attempts(&self) -> Vec<SystemTime> {
        lock(&self.attempts).clone()
    }

    /// The secret key of issued access key `ak`, if its security token is `token` and it has
    /// not expired at `now`; why not otherwise. `None` for a key it did not issue.
    pub(super) fn secret_of(
        &self,
        ak: &str,
        token: Option<&str>,
        now: SystemTime,
    ) -> Option<Result<String, String>> {
        let issued = lock(&self.issued);
        let keys = issued.get(ak)?;
        Some(if token != Some(keys.token.as_str()) {
            Err("the security token does not belong to the access key".into())
        } else if now >= keys.expires_at {
            Err("the security token has expired".into())
        } else {
            Ok(keys.sk.clone())
        })
    }

    /// Issues keys, or `None` while failures are due.
    fn issue(&self, now: SystemTime) -> Option<(String, String, String, String)> {
        lock(&self.attempts).push(now);
        if self
            .failing
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (ak, sk, token) = (
            format!("SIMTEMP{n:013}"),
            format!("simulator-temporary-secret-{n}"),
            format!("simulator-security-token-{n}"),
        );
        let expires_at = now + *lock(&self.lifetime);
        lock(&self.issued).insert(
            ak.clone(),
            Issued {
                sk: sk.clone(),
                token: token.clone(),
                expires_at,
            },
        );
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let at = jiff::Timestamp::try_from(expires_at).unwrap_or(jiff::Timestamp::MAX);
        let expiry = match *lock(&self.style) {
            ExpiryStyle::Micros => at.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string(),
            ExpiryStyle::Seconds => at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ExpiryStyle::Malformed => "soon".to_owned(),
        };
        Some((ak, sk, token, expiry))
    }

    /// The answer to a request of a credential service, or `None` when the path is none of
    /// theirs. `signed` checks the signature of IAM's project look-up.
    pub(super) fn answer(
        &self,
        request: &Request,
        now: SystemTime,
        signed: impl FnOnce() -> Result<(), String>,
    ) -> Option<ResponseTemplate> {
        let method = request.method.as_str();
        Some(match (method, request.url.path()) {
            ("PUT", "/meta-data/latest/api/token") => {
                ResponseTemplate::new(200).set_body_string(SESSION_TOKEN)
            }
            ("GET", "/openstack/latest/securitykey") => self.metadata_keys(request, now),
            ("POST", "/pod-identity/credentials") => {
                if header(request, "authorization").is_none_or(str::is_empty) {
                    return Some(json_answer(
                        401,
                        &json!({"error_msg": "no authorization token"}),
                    ));
                }
                self.hand_out(now, 200, |ak, sk, token, expiry| {
                    json!({"credentials": {
                        "accessKeyId": ak,
                        "secretAccessKey": sk,
                        "securityToken": token,
                        "expiration": expiry,
                    }})
                })
            }
            ("POST", "/v5/agencies/assume-with-oidc") => {
                let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
                let given = |key: &str| body[key].as_str().is_some_and(|v| !v.is_empty());
                if !(given("id_token") && given("provider_urn") && given("agency_urn")) {
                    return Some(json_answer(
                        400,
                        &json!({"error_msg": "a field is missing"}),
                    ));
                }
                self.hand_out(now, 201, |ak, sk, token, expiry| {
                    json!({"credentials": {
                        "access_key_id": ak,
                        "secret_access_key": sk,
                        "security_token": token,
                        "expiration": expiry,
                    }})
                })
            }
            ("POST", "/v3.0/OS-AUTH/id-token/tokens") => {
                let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
                let token = body["auth"]["id_token"]["id"].as_str().unwrap_or_default();
                if header(request, "x-idp-id").is_none() || token.is_empty() {
                    return Some(json_answer(
                        401,
                        &json!({"error_msg": "the id token is refused"}),
                    ));
                }
                ResponseTemplate::new(201).insert_header("X-Subject-Token", SUBJECT_TOKEN)
            }
            ("POST", "/v3.0/OS-CREDENTIAL/securitytokens") => {
                let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
                if body["auth"]["identity"]["token"]["id"].as_str() != Some(SUBJECT_TOKEN) {
                    return Some(json_answer(
                        401,
                        &json!({"error_msg": "the token is refused"}),
                    ));
                }
                self.hand_out(now, 201, |ak, sk, token, expiry| {
                    json!({"credential": {
                        "access": ak,
                        "secret": sk,
                        "securitytoken": token,
                        "expires_at": expiry,
                    }})
                })
            }
            ("GET", "/v3/projects") => self.projects(request, signed),
            _ => return None,
        })
    }
}

impl Issuer {
    /// The metadata service's answer to a request for the instance's keys.
    fn metadata_keys(&self, request: &Request, now: SystemTime) -> ResponseTemplate {
        match *lock(&self.metadata) {
            Metadata::NoAgency => json_answer(
                401,
                &json!({"error": {"message": "Please configure Cloud Service Agency first", "code": 401}}),
            ),
            Metadata::Unauthorized => json_answer(
                401,
                &json!({"error": {"message": "Unauthorized", "code": 401}}),
            ),
            Metadata::Agency => {
                let session = header(request, "x-metadata-token");
                if session.is_some_and(|t| t != SESSION_TOKEN) {
                    return json_answer(401, &json!({"error": {"message": "Unauthorized"}}));
                }
                self.hand_out(now, 200, |ak, sk, token, expiry| {
                    json!({"credential": {
                        "access": ak,
                        "secret": sk,
                        "securitytoken": token,
                        "expires_at": expiry,
                    }})
                })
            }
        }
    }

    /// IAM's project look-up, signed like any API request.
    fn projects(
        &self,
        request: &Request,
        signed: impl FnOnce() -> Result<(), String>,
    ) -> ResponseTemplate {
        if let Err(why) = signed() {
            return json_answer(401, &json!({"error_msg": why}));
        }
        let name = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.into_owned());
        let projects: Vec<Value> = lock(&self.projects)
            .iter()
            .filter(|(n, _)| name.as_deref().is_none_or(|name| name == n))
            .map(|(n, id)| json!({"id": id, "name": n, "enabled": true}))
            .collect();
        json_answer(200, &json!({"projects": projects, "links": {}}))
    }

    /// Keys in the shape `shape` gives them, with `status`; 503 while failures are due.
    fn hand_out(
        &self,
        now: SystemTime,
        status: u16,
        shape: fn(String, String, String, String) -> Value,
    ) -> ResponseTemplate {
        match self.issue(now) {
            Some((ak, sk, token, expiry)) => json_answer(status, &shape(ak, sk, token, expiry)),
            None => json_answer(503, &json!({"error_msg": "the service is unavailable"})),
        }
    }
}

fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

fn json_answer(status: u16, body: &Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/json")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
