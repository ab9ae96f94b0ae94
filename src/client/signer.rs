//! SDK-HMAC-SHA256, the AK/SK request signature of Huawei Cloud's API gateway.
//!
//! The algorithm, as the official SDKs implement it:
//! 1. a canonical request: method, canonical URI (each path segment percent-encoded, always
//!    ending in `/`), canonical query (sorted), canonical headers (`name:value\n`, sorted), the
//!    signed header names joined by `;`, and the hex SHA-256 of the body, joined by `\n`;
//! 2. the string to sign: `SDK-HMAC-SHA256\n{X-Sdk-Date}\n{hex sha256(canonical request)}`;
//! 3. the signature: hex HMAC-SHA256 of it, keyed with the SK's bytes.
//!
//! The module is public API, under the crate's semantic versioning: servers, proxies and tests
//! can check a signature the same way the gateway does, with the code the client signs every
//! request with.
//!
//! ```
//! use iotda_task_watcher::client::signer::{authorization, SignRequest};
//! let url = "https://service.endpoint.myhuaweicloud.com/resources?size=1".parse()?;
//! let request = SignRequest {
//!     method: "GET",
//!     url: &url,
//!     headers: &[("Host", "service.endpoint.myhuaweicloud.com"), ("X-Sdk-Date", "20200608T023900Z")],
//!     body: b"",
//! };
//! let header = authorization("AccessKey", "SecretKey", &request);
//! assert!(header.ends_with("cfb4171acec81de07d50e53d57eb77edd537414d66ddb1d7d780f128e12cd842"));
//! # Ok::<(), url::ParseError>(())
//! ```

use std::time::SystemTime;

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use url::Url;

/// The algorithm's name, as it appears in the `Authorization` header.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// The header that carries the signing time.
pub const DATE_HEADER: &str = "X-Sdk-Date";
/// The `X-Sdk-Date` format, for `jiff`'s `strftime`.
pub const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Everything but `A-Z a-z 0-9 - _ . ~` is percent-encoded.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The parts of a request that the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignRequest<'a> {
    /// The HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// The full URL: path and query are signed.
    pub url: &'a Url,
    /// The headers to sign, including `X-Sdk-Date`; names with `_` are skipped.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// The `Authorization` header value for `request`, signed with `ak` and `sk`.
#[must_use]
pub fn authorization(ak: &str, sk: &str, request: &SignRequest<'_>) -> String {
    let headers = canonical_headers(request.headers);
    let signed = signed_headers(&headers);
    let signature = signature(sk, request);
    format!("{ALGORITHM} Access={ak}, SignedHeaders={signed}, Signature={signature}")
}

/// The hex signature of `request` under `sk`.
#[must_use]
#[allow(
    clippy::missing_panics_doc,
    reason = "cannot panic: HMAC takes a key of any length"
)]
pub fn signature(sk: &str, request: &SignRequest<'_>) -> String {
    let date = request
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(DATE_HEADER))
        .map_or("", |(_, value)| value.trim());
    let string_to_sign = format!(
        "{ALGORITHM}\n{date}\n{}",
        hex::encode(Sha256::digest(canonical_request(request)))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(sk.as_bytes()).expect("HMAC accepts any key");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The canonical request, the text whose hash is signed.
#[must_use]
pub fn canonical_request(request: &SignRequest<'_>) -> String {
    let headers = canonical_headers(request.headers);
    let mut out = String::with_capacity(256);
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&canonical_uri(request.url.path()));
    out.push('\n');
    out.push_str(&canonical_query(request.url));
    out.push('\n');
    for (name, value) in &headers {
        out.push_str(name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers(&headers));
    out.push('\n');
    out.push_str(&hex::encode(Sha256::digest(request.body)));
    out
}

/// Each path segment decoded, then percent-encoded; a `/` is appended when missing.
#[must_use]
pub fn canonical_uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    let mut segments = path.split('/').peekable();
    while let Some(segment) = segments.next() {
        out.extend(utf8_percent_encode(&decode(segment), ENCODE));
        if segments.peek().is_some() {
            out.push('/');
        }
    }
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// Query pairs sorted by key, then by value (as decoded text), each side percent-encoded,
/// joined by `&`.
#[must_use]
pub fn canonical_query(url: &Url) -> String {
    // Sorted as decoded text, then encoded: the official signers sort the raw keys and values.
    let mut pairs: Vec<(String, String)> = url
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_query(k), decode_query(v))
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.extend(utf8_percent_encode(k, ENCODE));
        out.push('=');
        out.extend(utf8_percent_encode(v, ENCODE));
    }
    out
}

/// Percent-encodes `s` the way the signature does (`space` as `%20`, `/` as `%2F`).
#[must_use]
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn decode_query(s: &str) -> String {
    decode(&s.replace('+', " "))
}

/// Lower-cased names with trimmed values, sorted by name; names with `_` are left out.
fn canonical_headers(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| !name.contains('_'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    out.sort();
    out
}

fn signed_headers(headers: &[(String, String)]) -> String {
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    names.join(";")
}

/// Parses an `Authorization: SDK-HMAC-SHA256 Access=.., SignedHeaders=.., Signature=..` value.
///
/// Returns `(access key, signed header names, signature)`.
#[must_use]
pub fn parse_authorization(value: &str) -> Option<(&str, Vec<&str>, &str)> {
    let rest = value.strip_prefix(ALGORITHM)?.trim_start();
    let mut access = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (key, val) = part.trim().split_once('=')?;
        match key {
            "Access" => access = Some(val),
            "SignedHeaders" => signed = Some(val.split(';').collect()),
            "Signature" => signature = Some(val),
            _ => return None,
        }
    }
    Some((access?, signed?, signature?))
}

/// `X-Sdk-Date` for `now`: `YYYYMMDDTHHMMSSZ` in UTC.
pub(crate) fn sdk_date(now: SystemTime) -> String {
    jiff::Timestamp::try_from(now)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime(DATE_FORMAT)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_date_is_utc_basic_format() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_704_067_200);
        assert_eq!(sdk_date(t), "20240101T000000Z");
    }

    fn sign(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
        let url: Url = url.parse().unwrap();
        let request = SignRequest {
            method,
            url: &url,
            headers,
            body,
        };
        authorization("AccessKey", "SecretKey", &request)
    }

    fn expect(header: &str, signed: &str, signature: &str) {
        assert_eq!(
            header,
            format!(
                "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders={signed}, Signature={signature}"
            )
        );
    }

    #[test]
    fn vector_get_with_query() {
        let h = sign(
            "GET",
            "https://service.endpoint.myhuaweicloud.com/resources?size=1",
            &[
                ("Host", "service.endpoint.myhuaweicloud.com"),
                ("X-Sdk-Date", "20200608T023900Z"),
            ],
            b"",
        );
        expect(
            &h,
            "host;x-sdk-date",
            "cfb4171acec81de07d50e53d57eb77edd537414d66ddb1d7d780f128e12cd842",
        );
    }

    #[test]
    fn vector_post_with_body() {
        let h = sign(
            "POST",
            "https://service.endpoint.myhuaweicloud.com/resources?size=1",
            &[
                ("Host", "service.endpoint.myhuaweicloud.com"),
                ("X-Sdk-Date", "20200608T023900Z"),
            ],
            br#"{"name":"test","id":1}"#,
        );
        expect(
            &h,
            "host;x-sdk-date",
            "436b1ac0a1ae03705934bb70ef2f2e09f7bfed2117d731a38235053199323a1f",
        );
    }

    #[test]
    fn vector_without_host_and_skipping_underscore_headers() {
        let h = sign(
            "GET",
            "https://example.huaweicloud.com/path?limit=1",
            &[("X-Sdk-Date", "20060102T150405Z"), ("X_Ignored", "value")],
            b"",
        );
        expect(
            &h,
            "x-sdk-date",
            "5a2ce64c865e0e6046321c6f3d5a77ba8413eeaf355c3166c03d58d02ac79624",
        );
    }

    #[test]
    fn vector_two_query_parameters() {
        let h = sign(
            "GET",
            "https://service.region.example.com/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs?limit=2&marker=13551d6b-755d-4757-b956-536f674975c0",
            &[
                ("Host", "service.region.example.com"),
                ("X-Sdk-Date", "20191115T033655Z"),
            ],
            b"",
        );
        expect(
            &h,
            "host;x-sdk-date",
            "fd95e7da6f695cfb4cabbb9d6b0968aec155bc576b064835282473539ae9ea1d",
        );
    }

    #[test]
    fn vector_empty_path() {
        let h = sign(
            "GET",
            "https://example.com",
            &[("Host", "example.com"), ("X-Sdk-Date", "20191115T033655Z")],
            b"",
        );
        expect(
            &h,
            "host;x-sdk-date",
            "919ad8b75d4ad49da0d377e63ee21c4a7a54b752f6bf2878b4adbe9c19927da6",
        );
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
    }

    const TASK_URL: &str = "https://iotda-mgmt.cn-north-4.myhuaweicloud.com/v5/iot/0123456789abcdef0123456789abcdef/iotda-instances/a1b2c3d4-0000-1111-2222-333344445555/tasks/075f413d-a3bb-4243-974d-8eb9221c1234";

    #[test]
    fn vector_instance_task_with_project_id() {
        let h = sign(
            "GET",
            TASK_URL,
            &[
                ("Host", "iotda-mgmt.cn-north-4.myhuaweicloud.com"),
                ("X-Sdk-Date", "20240101T000000Z"),
                ("X-Project-Id", "0123456789abcdef0123456789abcdef"),
            ],
            b"",
        );
        expect(
            &h,
            "host;x-project-id;x-sdk-date",
            "4d221ed5186e501465941a22ec4ea51a33dfed830521d64e428272af448c5d5c",
        );
    }

    #[test]
    fn vector_instance_task_with_security_token() {
        let h = sign(
            "GET",
            TASK_URL,
            &[
                ("Host", "iotda-mgmt.cn-north-4.myhuaweicloud.com"),
                ("X-Sdk-Date", "20261127T120000Z"),
                ("X-Project-Id", "0123456789abcdef0123456789abcdef"),
                ("Content-Type", "application/json"),
                ("X-Security-Token", "gQpjbi1ub3J0aC00dGVtcA"),
            ],
            b"",
        );
        expect(
            &h,
            "content-type;host;x-project-id;x-sdk-date;x-security-token",
            "5330a951ddacdac79a1bb6b9dce88b8013fa787dfbd42e8d5c0f78ff61063bf7",
        );
    }

    #[test]
    fn query_encoding_matches_the_official_sdk() {
        let mut url: Url = "https://example.com/".parse().unwrap();
        url.query_pairs_mut()
            .append_pair("test", "一 (&=?!#%.*)")
            .append_pair("path", "/tmp/123")
            .append_pair("multi", "3")
            .append_pair("multi", "1")
            .append_pair("multi", "2")
            .append_pair("limit", "1")
            .append_pair("enable", "true");
        assert_eq!(
            canonical_query(&url),
            "enable=true&limit=1&multi=1&multi=2&multi=3&path=%2Ftmp%2F123&test=%E4%B8%80%20%28%26%3D%3F%21%23%25.%2A%29"
        );
    }

    #[test]
    fn query_values_sort_before_they_are_encoded() {
        let mut url: Url = "https://example.com/".parse().unwrap();
        url.query_pairs_mut()
            .append_pair("k", "{")
            .append_pair("k", "a");
        // 'a' sorts before '{' as text, though "%7B" would sort before "a".
        assert_eq!(canonical_query(&url), "k=a&k=%7B");
    }

    #[test]
    fn canonical_request_has_a_blank_line_after_the_headers() {
        let url: Url = "https://h/a%20b/c".parse().unwrap();
        let text = canonical_request(&SignRequest {
            method: "GET",
            url: &url,
            headers: &[("Host", " h "), ("X-Sdk-Date", "20240101T000000Z")],
            body: b"",
        });
        assert_eq!(
            text,
            "GET\n/a%20b/c/\n\nhost:h\nx-sdk-date:20240101T000000Z\n\nhost;x-sdk-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parses_its_own_authorization_header() {
        let h = sign(
            "GET",
            "https://example.com",
            &[("Host", "example.com"), ("X-Sdk-Date", "20191115T033655Z")],
            b"",
        );
        let (ak, signed, sig) = parse_authorization(&h).unwrap();
        assert_eq!(ak, "AccessKey");
        assert_eq!(signed, ["host", "x-sdk-date"]);
        assert_eq!(sig.len(), 64);
        assert!(parse_authorization("Basic abc").is_none());
        assert!(parse_authorization("SDK-HMAC-SHA256 Access=a").is_none());
    }
}
