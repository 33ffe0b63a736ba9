//! What a child process or a pool task used, and the limit it ran into:
//! plain data that errors carry, below every other module.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The limit a child ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Limit {
    /// The address-space limit, in bytes.
    Memory(u64),
    /// The CPU-time limit (per task in a pool).
    CpuTime(Duration),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Memory(b) if b % (1 << 20) == 0 => write!(f, "memory limit of {} MiB", b >> 20),
            Limit::Memory(b) => write!(f, "memory limit of {b} bytes"),
            Limit::CpuTime(d) => write!(f, "CPU time limit of {d:?}"),
        }
    }
}

/// The resources a child process or a pool task used.
///
/// # Examples
/// ```
/// fn work(n: u64) -> u64 { (0..n).sum() }
///
/// let mut p = multiproc::Process::new(work, (1000,));
/// p.start()?;
/// p.join()?;
/// let used = p.usage().expect("joined");
/// assert!(used.peak_rss > 0);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// CPU time, user plus system.
    pub cpu_time: Duration,
    /// Peak resident set size, in bytes.
    pub peak_rss: u64,
}

impl ResourceUsage {
    pub(crate) fn from_rusage(ru: &libc::rusage) -> Self {
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        ResourceUsage {
            cpu_time: tv(ru.ru_utime) + tv(ru.ru_stime),
            peak_rss: (ru.ru_maxrss.max(0) as u64).saturating_mul(1024),
        }
    }

    /// Adds `other` (CPU times add up, the peak is the larger one).
    pub(crate) fn merge(&mut self, other: ResourceUsage) {
        self.cpu_time += other.cpu_time;
        self.peak_rss = self.peak_rss.max(other.peak_rss);
    }

    /// Encodes as `[cpu ns u64][peak rss u64]`, little-endian.
    pub(crate) fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        let ns = u64::try_from(self.cpu_time.as_nanos()).unwrap_or(u64::MAX);
        b[..8].copy_from_slice(&ns.to_le_bytes());
        b[8..].copy_from_slice(&self.peak_rss.to_le_bytes());
        b
    }

    /// Decodes what [`to_bytes`](Self::to_bytes) wrote.
    pub(crate) fn from_bytes(b: &[u8; 16]) -> Self {
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        ResourceUsage {
            cpu_time: Duration::from_nanos(word(0)),
            peak_rss: word(8),
        }
    }
}
