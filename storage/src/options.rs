//! Options of the segment log: segment size, entry size limit, index density and fsync policy,
//! with [`LogOptions::validate`] checking that they can work together.

use std::fmt;
use std::str::FromStr;

use crate::error::{Result, StorageError};
use crate::frame::FRAME_HEADER_BYTES;
use crate::segment::SEGMENT_HEADER_BYTES;

pub use crate::limits::{
    DEFAULT_INDEX_INTERVAL_BYTES, DEFAULT_MAX_ENTRY_BYTES, DEFAULT_SEGMENT_BYTES, MAX_SEGMENT_BYTES,
};

/// Derives a message offset from an entry, used only to rebuild a lost `.offsets` file.
pub type OffsetKeyFn = fn(kind: u8, payload: &[u8]) -> Option<u64>;

/// When appended entries are made durable (`--fsync`, docs/OPERATIONS.md "Settings").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// `sync()` fdatasyncs every time: a batch is durable before it is acknowledged.
    #[default]
    Always,
    /// `sync()` fdatasyncs only if `ms` milliseconds passed since the last fdatasync.
    Interval { ms: u64 },
    /// `sync()` never fdatasyncs (benchmarks only). Segments are not fdatasynced when sealed
    /// either (nor by a later open, which syncs only the active segment), so a power loss may
    /// tear a sealed segment, which the next open or read reports as corruption.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval { ms } => write!(f, "interval:{ms}"),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = StorageError;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "always" => return Ok(FsyncPolicy::Always),
            "never" => return Ok(FsyncPolicy::Never),
            _ => {}
        }
        let bad = || {
            StorageError::InvalidOptions(format!(
                "fsync policy {text:?}: expected always, interval:<ms> (ms > 0) or never"
            ))
        };
        let ms_text = text.strip_prefix("interval:").ok_or_else(bad)?;
        let ms: u64 = ms_text.parse().map_err(|_| bad())?;
        if ms == 0 {
            return Err(bad());
        }
        Ok(FsyncPolicy::Interval { ms })
    }
}

/// Options of one [`crate::Log`]. Check them with [`LogOptions::validate`] (`Log::open` does).
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Length of each segment file; disk is reserved as frames fill it (limits.rs
    /// `SEGMENT_EXTENT_BYTES`).
    pub segment_bytes: u64,
    /// Largest payload one entry may carry.
    pub max_entry_bytes: u32,
    /// One sparse `.index` / `.offsets` slot per this many bytes of frames.
    pub index_interval_bytes: u32,
    /// What `Log::sync` does.
    pub fsync: FsyncPolicy,
    /// Message offset of an entry, used only to rebuild `.offsets` from the log when that
    /// file is lost or garbage. Without it a rebuilt `.offsets` stays empty.
    pub offset_key: Option<OffsetKeyFn>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            fsync: FsyncPolicy::Always,
            offset_key: None,
        }
    }
}

impl LogOptions {
    /// Rejects options that cannot work: an entry limit whose largest frame does not fit a
    /// fresh segment after its header, a segment too large for the `u32` index positions,
    /// and zero limits.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(StorageError::InvalidOptions(message));
        if self.max_entry_bytes == 0 {
            return invalid("max_entry_bytes must be > 0".into());
        }
        if self.index_interval_bytes == 0 {
            return invalid("index_interval_bytes must be > 0 (1 = a slot per entry)".into());
        }
        if self.fsync == (FsyncPolicy::Interval { ms: 0 }) {
            return invalid("fsync interval must be > 0 ms".into());
        }
        if self.segment_bytes > MAX_SEGMENT_BYTES {
            return invalid(format!(
                "segment_bytes {} exceeds {MAX_SEGMENT_BYTES} (index positions are u32)",
                self.segment_bytes
            ));
        }
        let needed_bytes = self.smallest_segment_bytes();
        if self.segment_bytes < needed_bytes {
            return invalid(format!(
                "segment_bytes {} cannot hold the {SEGMENT_HEADER_BYTES}-byte header plus one \
                 frame of max_entry_bytes {} ({needed_bytes} bytes needed)",
                self.segment_bytes, self.max_entry_bytes
            ));
        }
        Ok(())
    }

    /// Segment size needed to hold the header and one frame of the largest allowed payload.
    pub fn smallest_segment_bytes(&self) -> u64 {
        SEGMENT_HEADER_BYTES as u64 + FRAME_HEADER_BYTES as u64 + u64::from(self.max_entry_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_round_trips_through_text() {
        for policy in [
            FsyncPolicy::Always,
            FsyncPolicy::Never,
            FsyncPolicy::Interval { ms: 250 },
        ] {
            assert_eq!(policy.to_string().parse::<FsyncPolicy>().unwrap(), policy);
        }
        for bad in [
            "",
            "Always",
            "interval:",
            "interval:0",
            "interval:-5",
            "interval:x",
        ] {
            assert!(
                bad.parse::<FsyncPolicy>().is_err(),
                "{bad:?} must not parse"
            );
        }
    }

    #[test]
    fn default_options_are_valid() {
        LogOptions::default().validate().unwrap();
    }

    #[test]
    fn entry_limit_must_fit_a_segment() {
        let mut options = LogOptions {
            segment_bytes: 64 << 10,
            max_entry_bytes: 1024,
            ..LogOptions::default()
        };
        options.validate().unwrap();
        options.max_entry_bytes = (64 << 10) - 49; // 24 header + 25 frame header + payload
        assert!(options.validate().is_ok());
        options.max_entry_bytes += 1;
        assert!(matches!(
            options.validate(),
            Err(StorageError::InvalidOptions(_))
        ));
    }

    #[test]
    fn zero_limits_and_huge_segments_are_rejected() {
        let base = LogOptions::default();
        let cases = [
            LogOptions {
                max_entry_bytes: 0,
                ..base.clone()
            },
            LogOptions {
                index_interval_bytes: 0,
                ..base.clone()
            },
            LogOptions {
                fsync: FsyncPolicy::Interval { ms: 0 },
                ..base.clone()
            },
            LogOptions {
                segment_bytes: MAX_SEGMENT_BYTES + 1,
                ..base.clone()
            },
        ];
        for options in cases {
            assert!(options.validate().is_err(), "{options:?}");
        }
    }
}
