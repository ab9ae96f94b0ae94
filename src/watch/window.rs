//! Maintenance windows: when a closed window opens next.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::model::OperateWindow;

/// When `window` (daily, `HH:mm` to `HH:mm` UTC) opens next after `now`, or `None` when it is
/// open now, always open, or does not parse.
pub(crate) fn next_opening(window: &OperateWindow, now: Timestamp) -> Option<Timestamp> {
    let (start, end) = (window.start()?, window.end()?);
    if start == end {
        return None;
    }
    let utc = now.to_zoned(TimeZone::UTC);
    let time = utc.time();
    let open = if start < end {
        start <= time && time < end
    } else {
        // Across midnight, e.g. 22:00 to 02:00.
        time >= start || time < end
    };
    if open {
        return None;
    }
    let today = utc
        .date()
        .to_datetime(start)
        .to_zoned(TimeZone::UTC)
        .ok()?
        .timestamp();
    let opening = if time < start {
        today
    } else {
        today.checked_add(SignedDuration::from_hours(24)).ok()?
    };
    Some(opening)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: &str, end: &str) -> OperateWindow {
        OperateWindow {
            start_time: Some(start.into()),
            end_time: Some(end.into()),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_window_later_today_opens_today() {
        let w = window("18:00", "22:00");
        assert_eq!(
            next_opening(&w, at("2026-11-27T10:27:00Z")),
            Some(at("2026-11-27T18:00:00Z"))
        );
    }

    #[test]
    fn a_window_that_has_closed_opens_tomorrow() {
        let w = window("18:00", "22:00");
        assert_eq!(
            next_opening(&w, at("2026-11-27T22:00:00Z")),
            Some(at("2026-11-28T18:00:00Z"))
        );
    }

    #[test]
    fn an_open_window_is_none() {
        let w = window("18:00", "22:00");
        assert_eq!(next_opening(&w, at("2026-11-27T18:00:00Z")), None);
        assert_eq!(next_opening(&w, at("2026-11-27T21:59:59Z")), None);
    }

    #[test]
    fn a_window_across_midnight() {
        let w = window("22:00", "02:00");
        assert_eq!(next_opening(&w, at("2026-11-27T23:30:00Z")), None);
        assert_eq!(next_opening(&w, at("2026-11-28T01:59:00Z")), None);
        assert_eq!(
            next_opening(&w, at("2026-11-28T02:00:00Z")),
            Some(at("2026-11-28T22:00:00Z"))
        );
    }

    #[test]
    fn unusable_windows_are_none() {
        assert_eq!(
            next_opening(&window("18:00", "18:00"), at("2026-11-27T10:00:00Z")),
            None
        );
        assert_eq!(
            next_opening(&window("6pm", "22:00"), at("2026-11-27T10:00:00Z")),
            None
        );
        assert_eq!(
            next_opening(&OperateWindow::default(), at("2026-11-27T10:00:00Z")),
            None
        );
    }
}
