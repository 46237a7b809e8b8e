//! HTTP Range (RFC 9110 section 14) for downloads, so browsers can seek in a video.
//! One range per request; a multi-range request is answered with the whole file, which the RFC allows.

use std::ops::Range;

/// What a Range header asks of a file of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No header, or one we answer with the whole file (200).
    Full,
    /// One satisfiable byte range (206).
    Partial(Range<u64>),
    /// A range that starts past the end or is malformed in a bytes unit (416).
    Unsatisfiable,
}

pub fn parse_range(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(header) = header else {
        return RangeRequest::Full;
    };
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        // Unknown units are ignored (RFC 9110 14.2).
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Unsatisfiable;
    };
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        // Suffix: the last N bytes.
        match end.parse::<u64>() {
            Ok(0) | Err(_) => return RangeRequest::Unsatisfiable,
            Ok(n) => len.saturating_sub(n)..len,
        }
    } else {
        let Ok(first) = start.parse::<u64>() else {
            return RangeRequest::Unsatisfiable;
        };
        let last = if end.is_empty() {
            len.saturating_sub(1)
        } else {
            match end.parse::<u64>() {
                Ok(last) if last >= first => last.min(len.saturating_sub(1)),
                _ => return RangeRequest::Unsatisfiable,
            }
        };
        if first >= len {
            return RangeRequest::Unsatisfiable;
        }
        first..last + 1
    };
    if range.is_empty() {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Partial(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_browsers_send() {
        assert_eq!(parse_range(None, 100), RangeRequest::Full);
        assert_eq!(
            parse_range(Some("bytes=0-9"), 100),
            RangeRequest::Partial(0..10)
        );
        assert_eq!(
            parse_range(Some("bytes=90-"), 100),
            RangeRequest::Partial(90..100)
        );
        assert_eq!(
            parse_range(Some("bytes=-5"), 100),
            RangeRequest::Partial(95..100)
        );
        // An end past the file is clamped, not refused.
        assert_eq!(
            parse_range(Some("bytes=50-500"), 100),
            RangeRequest::Partial(50..100)
        );
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), RangeRequest::Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), RangeRequest::Full);
    }

    #[test]
    fn refuses_ranges_that_cannot_be_served() {
        for bad in [
            "bytes=100-",
            "bytes=200-300",
            "bytes=9-3",
            "bytes=x-3",
            "bytes=-0",
            "bytes=5",
        ] {
            assert_eq!(
                parse_range(Some(bad), 100),
                RangeRequest::Unsatisfiable,
                "{bad}"
            );
        }
        assert_eq!(
            parse_range(Some("bytes=-5"), 0),
            RangeRequest::Unsatisfiable
        );
    }
}
