//! Where requests go: the `iotda-mgmt` host of a region, or a custom URL.
//!
//! HTTPS is required, except for loopback hosts (`127.0.0.0/8`, `::1`, `localhost`), which tests
//! and the simulator use.

use std::fmt;
use std::net::IpAddr;

use url::{Host, Url};

/// The regions in the official SDKs' table for the instance-management service.
pub const REGIONS: &[&str] = &[
    "cn-north-4",
    "cn-south-4",
    "cn-south-1",
    "cn-east-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "af-south-1",
    "me-east-1",
    "la-south-2",
    "ru-moscow-1",
];

/// A validated base URL for the API.
///
/// ```
/// use iotda_task_watcher::client::endpoint::Endpoint;
/// let e = Endpoint::for_region("cn-north-4")?;
/// assert_eq!(e.as_url().as_str(), "https://iotda-mgmt.cn-north-4.myhuaweicloud.com/");
/// assert!(Endpoint::custom("http://example.com").is_err());
/// assert!(Endpoint::custom("http://127.0.0.1:8080").is_ok());
/// # Ok::<(), iotda_task_watcher::client::endpoint::EndpointError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: Url,
}

impl Endpoint {
    /// The endpoint of `region`.
    ///
    /// When the official override variable `HUAWEICLOUD_SDK_REGION_IOTDM_{REGION}` is set
    /// (region upper-cased, `-` as `_`), its URL is used instead; that also makes a region
    /// outside [`REGIONS`] usable.
    ///
    /// # Errors
    /// [`EndpointError::UnknownRegion`] for a region neither in the table nor overridden, and
    /// the errors of [`Endpoint::custom`] for a bad override.
    pub fn for_region(region: &str) -> Result<Self, EndpointError> {
        let region = region.trim();
        if region.is_empty() {
            return Err(EndpointError::EmptyRegion);
        }
        let var = override_variable(region);
        if let Ok(url) = std::env::var(&var) {
            if !url.trim().is_empty() {
                return Self::custom(url.trim()).map_err(|e| EndpointError::Override {
                    variable: var,
                    source: Box::new(e),
                });
            }
        }
        if !REGIONS.contains(&region) {
            return Err(EndpointError::UnknownRegion {
                region: region.to_owned(),
            });
        }
        Self::custom(&format!("https://iotda-mgmt.{region}.myhuaweicloud.com"))
    }

    /// A custom endpoint: `https://host[:port]`, or `http://` for a loopback host.
    ///
    /// # Errors
    /// [`EndpointError`] for a URL that does not parse, a scheme other than https (http only
    /// for loopback), user info, a query or fragment, or a path other than `/`.
    pub fn custom(url: &str) -> Result<Self, EndpointError> {
        let shown = redact(url);
        let bad = |reason: &'static str| EndpointError::Invalid {
            url: shown.clone(),
            reason,
        };
        let parsed = Url::parse(url).map_err(|_| bad("it is not an absolute URL"))?;
        let host = parsed.host().ok_or_else(|| bad("it has no host"))?;
        match parsed.scheme() {
            "https" => {}
            "http" if is_loopback(&host) => {}
            "http" => return Err(EndpointError::InsecureRemote { url: shown }),
            _ => return Err(bad("the scheme must be https")),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad("it must not carry user info"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("it must not carry a query or fragment"));
        }
        if parsed.path() != "/" {
            return Err(bad("it must not carry a path"));
        }
        Ok(Self { url: parsed })
    }

    /// The base URL.
    #[must_use]
    pub fn as_url(&self) -> &Url {
        &self.url
    }

    /// The value of the `Host` header: the host, with the port when it is not the default.
    #[must_use]
    pub fn host_header(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.url)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str().trim_end_matches('/'))
    }
}

/// `url` for messages: user info (`user:password@`) becomes `***@`, and a query or fragment
/// (`?access_token=...`) becomes `?***` or `#***`: any of them may hold a secret.
fn redact(url: &str) -> String {
    let (url, hidden) = match url.find(['?', '#']) {
        Some(at) => (&url[..at], &url[at..=at]),
        None => (url, ""),
    };
    let hidden = if hidden.is_empty() {
        String::new()
    } else {
        format!("{hidden}***")
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url}{hidden}");
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}{hidden}", &rest[at + 1..]),
        None => format!("{url}{hidden}"),
    }
}

/// The official endpoint override variable for `region`.
///
/// ```
/// assert_eq!(
///     iotda_task_watcher::client::endpoint::override_variable("cn-north-4"),
///     "HUAWEICLOUD_SDK_REGION_IOTDM_CN_NORTH_4"
/// );
/// ```
#[must_use]
pub fn override_variable(region: &str) -> String {
    format!(
        "HUAWEICLOUD_SDK_REGION_IOTDM_{}",
        region.to_ascii_uppercase().replace('-', "_")
    )
}

/// What to say of an unknown region: the lower-case name when that is known (region names
/// are lower-case), otherwise the known ones and the override variable.
fn unknown_region(region: &str) -> String {
    let lower = region.to_ascii_lowercase();
    if lower != region && REGIONS.contains(&lower.as_str()) {
        return format!("unknown region {region:?}: region names are lower-case; use {lower}");
    }
    format!(
        "unknown region {region:?}: known regions are {}; set {} to use another",
        REGIONS.join(", "),
        override_variable(region)
    )
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => {
            d.eq_ignore_ascii_case("localhost") || d.eq_ignore_ascii_case("localhost.")
        }
        Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

/// An endpoint that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// No region was given (an empty or blank name).
    #[error("the region is empty: name one of {}", REGIONS.join(", "))]
    EmptyRegion,
    /// The region is not in the table and no override variable names its URL.
    #[error("{}", unknown_region(region))]
    UnknownRegion {
        /// The region asked for.
        region: String,
    },
    /// Plain `http://` to a host that is not loopback.
    #[error("refusing plain http to {url}: https is required except for loopback hosts")]
    InsecureRemote {
        /// The URL refused.
        url: String,
    },
    /// The URL is not a usable base URL.
    #[error("invalid endpoint {url:?}: {reason}")]
    Invalid {
        /// The URL refused.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// The region's override variable holds an unusable URL: the variable's name, and what
    /// is wrong as the [`source`](std::error::Error::source).
    #[error("{variable}")]
    Override {
        /// The variable's name.
        variable: String,
        /// What is wrong with its value.
        source: Box<EndpointError>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_region_maps_to_its_mgmt_host() {
        for region in REGIONS {
            let e = Endpoint::for_region(region).unwrap();
            assert_eq!(
                e.to_string(),
                format!("https://iotda-mgmt.{region}.myhuaweicloud.com")
            );
            assert_eq!(
                e.host_header(),
                format!("iotda-mgmt.{region}.myhuaweicloud.com")
            );
        }
    }

    #[test]
    fn an_unknown_region_says_how_to_fix_it() {
        let err = Endpoint::for_region("xx-nowhere-9").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cn-north-4"), "{text}");
        assert!(
            text.contains("HUAWEICLOUD_SDK_REGION_IOTDM_XX_NOWHERE_9"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_or_upper_case_region_is_named_as_such() {
        for empty in ["", "  "] {
            let text = Endpoint::for_region(empty).unwrap_err().to_string();
            assert!(text.starts_with("the region is empty"), "{text}");
            assert!(!text.contains("IOTDM_"), "{text}");
        }
        let text = Endpoint::for_region("CN-NORTH-4").unwrap_err().to_string();
        assert!(text.contains("lower-case; use cn-north-4"), "{text}");
    }

    #[test]
    fn messages_hide_user_info_queries_and_fragments() {
        for (url, shown) in [
            (
                "ftp://u:p@h.example/?access_token=abc",
                "ftp://***@h.example/?***",
            ),
            (
                "https://h.example?access_token=abc",
                "https://h.example?***",
            ),
            ("https://h.example/x#frag", "https://h.example/x#***"),
            ("https://h.example:8443", "https://h.example:8443"),
        ] {
            assert_eq!(redact(url), shown);
            let text = Endpoint::custom(url).err().map(|e| e.to_string());
            assert!(
                !text.as_deref().unwrap_or_default().contains("abc"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn http_only_for_loopback() {
        for ok in [
            "http://127.0.0.1:1234",
            "http://127.8.9.10",
            "http://[::1]:80/",
            "http://localhost:9",
            "http://LOCALHOST",
            "https://example.com:8443",
        ] {
            assert!(Endpoint::custom(ok).is_ok(), "{ok}");
        }
        for remote in [
            "http://example.com",
            "http://10.0.0.1",
            "http://[::2]",
            "http://localhost.example.com",
        ] {
            assert!(
                matches!(
                    Endpoint::custom(remote),
                    Err(EndpointError::InsecureRemote { .. })
                ),
                "{remote}"
            );
        }
        for bad in [
            "ftp://example.com",
            "example.com",
            "https://user:pw@example.com",
            "https://example.com/?a=1",
            "https://example.com/prefix",
            "https://example.com/#x",
        ] {
            assert!(
                matches!(Endpoint::custom(bad), Err(EndpointError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_do_not_repeat_credentials_in_a_url() {
        for url in [
            "https://user:hunter2@example.com",
            "http://user:hunter2@example.com/x",
            "https://u:hunter2@h:99999",
        ] {
            let err = Endpoint::custom(url).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("***@"), "{err}");
        }
    }

    #[test]
    fn host_header_keeps_a_non_default_port() {
        assert_eq!(
            Endpoint::custom("http://127.0.0.1:8080")
                .unwrap()
                .host_header(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            Endpoint::custom("https://h.example:443")
                .unwrap()
                .host_header(),
            "h.example"
        );
        assert_eq!(
            Endpoint::custom("http://[::1]:9").unwrap().host_header(),
            "[::1]:9"
        );
    }
}
