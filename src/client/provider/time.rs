//! The expiry times providers answer with.

use std::time::SystemTime;

use super::ProviderError;

/// An RFC 3339 time, such as `2020-01-08T03:50:07.574000Z`, with any number of fractional
/// digits (none to nine) and an offset (`Z` in every answer seen).
pub(super) fn parse_expiry(provider: &str, text: &str) -> Result<SystemTime, ProviderError> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .map(SystemTime::from)
        .map_err(|_| {
            ProviderError::Failed(format!("{provider}: the expiry {text:?} is not a time"))
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(text: &str) -> Result<Duration, ProviderError> {
        parse_expiry("test", text).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
    }

    #[test]
    fn expiries_parse_with_and_without_fractions() {
        let whole = Duration::from_secs(1_578_455_407);
        assert_eq!(at("2020-01-08T03:50:07Z").unwrap(), whole);
        assert_eq!(
            at("2020-01-08T03:50:07.574000Z").unwrap(),
            whole + Duration::from_millis(574)
        );
        assert_eq!(
            at("2020-01-08T03:50:07.5Z").unwrap(),
            whole + Duration::from_millis(500)
        );
        assert_eq!(
            at("2020-01-08T05:50:07.000001+02:00").unwrap(),
            whole + Duration::from_micros(1)
        );
    }

    #[test]
    fn a_malformed_expiry_is_an_error_that_quotes_it() {
        for text in ["", "tomorrow", "2020-01-08 03:50:07", "2020-01-08T03:50:07"] {
            let error = parse_expiry("ECS metadata", text).unwrap_err();
            assert!(
                matches!(&error, ProviderError::Failed(m) if m.contains("ECS metadata") && m.contains("is not a time")),
                "{text:?}: {error}"
            );
        }
    }
}
