//! Fault injection for the crash and fault tests, read once from the environment:
//!
//! - `LETHE_FAILPOINT=<name>` aborts the process at that point, as `kill -9` would stop it;
//! - `LETHE_FAULTS=<point>@<from>-<to>,…` makes the `from`-th to `to`-th calls (1-based) of
//!   an I/O point fail: `wal_write` and `segment_write` with ENOSPC, `wal_fsync` and
//!   `segment_delete` with EIO.
//!
//! Both exist only in builds with the `failpoints` feature (the tests'; `scripts/test.sh`
//! builds with it): a release build has neither the environment lookups nor the branches.

#[cfg(feature = "failpoints")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "failpoints")]
use std::sync::OnceLock;

/// Aborts the process if `LETHE_FAILPOINT` names this point.
#[cfg(feature = "failpoints")]
pub fn failpoint(name: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    if POINT
        .get_or_init(|| std::env::var("LETHE_FAILPOINT").ok())
        .as_deref()
        == Some(name)
    {
        eprintln!("lethe: failpoint {name} reached: aborting");
        std::process::abort();
    }
}

/// Without the `failpoints` feature, a failpoint is nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn failpoint(_name: &str) {}

/// An I/O call that a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoPoint {
    /// Writing a WAL record (fails with ENOSPC).
    WalWrite,
    /// Fsyncing the WAL (fails with EIO).
    WalFsync,
    /// Creating a segment file (fails with ENOSPC).
    SegmentWrite,
    /// Deleting segment objects (fails with EIO).
    SegmentDelete,
}

#[cfg(feature = "failpoints")]
impl IoPoint {
    const ALL: [IoPoint; 4] = [
        IoPoint::WalWrite,
        IoPoint::WalFsync,
        IoPoint::SegmentWrite,
        IoPoint::SegmentDelete,
    ];

    fn name(self) -> &'static str {
        match self {
            IoPoint::WalWrite => "wal_write",
            IoPoint::WalFsync => "wal_fsync",
            IoPoint::SegmentWrite => "segment_write",
            IoPoint::SegmentDelete => "segment_delete",
        }
    }

    fn error(self) -> std::io::Error {
        match self {
            IoPoint::WalWrite | IoPoint::SegmentWrite => std::io::Error::from_raw_os_error(28), // ENOSPC
            IoPoint::WalFsync | IoPoint::SegmentDelete => std::io::Error::from_raw_os_error(5), // EIO
        }
    }
}

#[cfg(feature = "failpoints")]
struct Plan {
    /// Per point: inclusive call-number ranges that fail.
    ranges: Vec<(IoPoint, u64, u64)>,
    calls: [AtomicU64; 4],
}

#[cfg(feature = "failpoints")]
fn plan() -> &'static Option<Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let spec = std::env::var("LETHE_FAULTS").ok()?;
        let ranges = spec
            .split(',')
            .filter_map(|item| {
                let (name, range) = item.trim().split_once('@')?;
                let point = IoPoint::ALL.into_iter().find(|p| p.name() == name)?;
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                Some((point, from.parse().ok()?, to.parse().ok()?))
            })
            .collect();
        Some(Plan {
            ranges,
            calls: Default::default(),
        })
    })
}

/// Without the `failpoints` feature, no I/O call is made to fail.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn inject(_point: IoPoint) -> std::io::Result<()> {
    Ok(())
}

/// Counts one call of `point` and fails it if the plan says so.
#[cfg(feature = "failpoints")]
pub(crate) fn inject(point: IoPoint) -> std::io::Result<()> {
    let Some(plan) = plan() else {
        return Ok(());
    };
    let n = plan.calls[point as usize].fetch_add(1, Ordering::Relaxed) + 1;
    if plan
        .ranges
        .iter()
        .any(|&(p, from, to)| p == point && (from..=to).contains(&n))
    {
        return Err(point.error());
    }
    Ok(())
}
