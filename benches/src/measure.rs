//! What a run costs the process that ran it: CPU time, resident memory, and
//! the median and spread of several runs.
//!
//! CPU time comes from `getrusage`: `RUSAGE_SELF` for a client running in
//! this process (every thread of it, the backend's own threads included), and
//! `RUSAGE_CHILDREN` for an external tool this process spawned and waited for.

use std::time::Duration;

pub use conformance_tests::memory::{current_rss_bytes, peak_rss_bytes};

/// Whose resource usage to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// This process, all its threads.
    SelfProcess,
    /// The children this process has waited for, together.
    Children,
}

/// CPU time (user + system) and peak RSS as `getrusage` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident set size: of this process, or of the largest waited-for child.
    pub max_rss_bytes: u64,
}

/// Reads `getrusage` for `who`; `None` where the call fails.
#[allow(unsafe_code)]
pub fn usage(who: Who) -> Option<Usage> {
    let target = match who {
        Who::SelfProcess => libc::RUSAGE_SELF,
        Who::Children => libc::RUSAGE_CHILDREN,
    };
    // SAFETY: `rusage` is plain old data that getrusage fills in completely
    // when it returns 0; a zeroed value is a valid starting point.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(target, &mut ru) != 0 {
            return None;
        }
        ru
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Some(Usage {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        // Linux reports ru_maxrss in KiB.
        max_rss_bytes: (ru.ru_maxrss.max(0) as u64) * 1024,
    })
}

/// The median, minimum and maximum of a set of figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median (the mean of the two middle figures for an even count).
    pub median: f64,
    /// The smallest figure.
    pub min: f64,
    /// The largest figure.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none or one is not finite.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn usage_grows_with_work() {
        let before = usage(Who::SelfProcess).expect("getrusage works on Linux");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = usage(Who::SelfProcess).expect("getrusage works on Linux");
        assert!(after.cpu > before.cpu);
        assert!(after.max_rss_bytes > 0);
    }
}
