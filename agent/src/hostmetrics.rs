//! CPU limit and usage of the pod, cgroup-aware. The parsing and the usage arithmetic are pure
//! functions; [`CpuProbe`] is the thin reader around them.
//!
//! Order of sources:
//! 1. cgroup v2 under the configured directory: `cpu.max` (`"max 100000"` = unlimited,
//!    `"200000 100000"` = 2 cores) and `cpu.stat` (`usage_usec`);
//! 2. cgroup v1: `cpu/cpu.cfs_quota_us` ÷ `cpu/cpu.cfs_period_us` (quota −1 = unlimited) and
//!    `cpuacct/cpuacct.usage` (nanoseconds) — also tried directly in the directory;
//! 3. the host through `sysinfo`: number of logical CPUs as the limit, global CPU usage.
//!
//! An explicit limit (`LAGBALANCE_CPU_LIMIT`, e.g. the app container's `limits.cpu` through the
//! downward API) overrides the detected one. Usage is turned into cores from two successive
//! cumulative counters: `Δusage / Δwall`.

use std::path::{Path, PathBuf};
use std::time::Instant;

/// cgroup v2 `cpu.max` → cores (`None` = unlimited or unparsable).
pub fn parse_cpu_max(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next().unwrap_or("100000").parse().ok()?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    let q: f64 = quota.parse().ok()?;
    (q > 0.0 && q.is_finite()).then(|| q / period)
}

/// cgroup v2 `cpu.stat` → `usage_usec` in seconds.
pub fn parse_cpu_stat_usage(s: &str) -> Option<f64> {
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == "usage_usec").then(|| v.trim().parse::<u64>().ok().map(|u| u as f64 / 1e6))?
    })
}

/// cgroup v1 quota and period → cores (`None` when unlimited or unparsable).
pub fn parse_v1_limit(quota: &str, period: &str) -> Option<f64> {
    let q: i64 = quota.trim().parse().ok()?;
    let p: i64 = period.trim().parse().ok()?;
    (q > 0 && p > 0).then(|| q as f64 / p as f64)
}

/// cgroup v1 `cpuacct.usage` (ns) → seconds.
pub fn parse_v1_usage(s: &str) -> Option<f64> {
    s.trim().parse::<u64>().ok().map(|n| n as f64 / 1e9)
}

/// Cores used between two cumulative usage readings (seconds of CPU) `dt_s` apart.
pub fn cores_used(prev_usage_s: f64, usage_s: f64, dt_s: f64) -> Option<f64> {
    if dt_s.is_nan() || dt_s <= 0.0 || usage_s < prev_usage_s {
        return None;
    }
    let c = (usage_s - prev_usage_s) / dt_s;
    c.is_finite().then_some(c)
}

/// Where the numbers came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    CgroupV2,
    CgroupV1,
    Host,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::CgroupV2 => "cgroup_v2",
            Source::CgroupV1 => "cgroup_v1",
            Source::Host => "host",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CpuReading {
    pub used_cores: Option<f64>,
    pub limit_cores: Option<f64>,
    pub source: Source,
}

/// Reads the CPU counters of the pod, remembering the previous usage reading.
pub struct CpuProbe {
    dir: PathBuf,
    limit_override: Option<f64>,
    prev: Option<(Instant, f64)>,
    sys: sysinfo::System,
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

impl CpuProbe {
    pub fn new(dir: impl Into<PathBuf>, limit_override: Option<f64>) -> Self {
        CpuProbe {
            dir: dir.into(),
            limit_override,
            prev: None,
            sys: sysinfo::System::new(),
        }
    }

    /// Cumulative usage (CPU seconds) and limit from the cgroup, if there is one.
    fn cgroup(&self) -> Option<(Source, Option<f64>, f64)> {
        let d = &self.dir;
        if let Some(stat) = read(&d.join("cpu.stat"))
            .as_deref()
            .and_then(parse_cpu_stat_usage)
        {
            let limit = read(&d.join("cpu.max")).as_deref().and_then(parse_cpu_max);
            return Some((Source::CgroupV2, limit, stat));
        }
        for (cpu, acct) in [(d.join("cpu"), d.join("cpuacct")), (d.clone(), d.clone())] {
            if let Some(usage) = read(&acct.join("cpuacct.usage"))
                .as_deref()
                .and_then(parse_v1_usage)
            {
                let limit = match (
                    read(&cpu.join("cpu.cfs_quota_us")),
                    read(&cpu.join("cpu.cfs_period_us")),
                ) {
                    (Some(q), Some(p)) => parse_v1_limit(&q, &p),
                    _ => None,
                };
                return Some((Source::CgroupV1, limit, usage));
            }
        }
        None
    }

    /// One reading. The first call has no usage yet (it needs two counters).
    pub fn sample(&mut self) -> CpuReading {
        let now = Instant::now();
        let host_cores = {
            let n = self.sys.cpus().len();
            if n == 0 {
                self.sys.refresh_cpu_usage();
            }
            self.sys.cpus().len()
        };
        let host_limit = (host_cores > 0).then_some(host_cores as f64);
        let reading = match self.cgroup() {
            Some((source, limit, usage)) => {
                let used = self
                    .prev
                    .and_then(|(t, u)| cores_used(u, usage, now.duration_since(t).as_secs_f64()));
                self.prev = Some((now, usage));
                CpuReading {
                    used_cores: used,
                    limit_cores: limit.or(host_limit),
                    source,
                }
            }
            None => {
                self.sys.refresh_cpu_usage();
                let pct = self.sys.global_cpu_usage() as f64;
                CpuReading {
                    used_cores: (self.prev.is_some() && pct.is_finite())
                        .then(|| pct / 100.0 * host_cores as f64),
                    limit_cores: host_limit,
                    source: Source::Host,
                }
            }
        };
        if self.prev.is_none() {
            self.prev = Some((now, 0.0));
        }
        CpuReading {
            limit_cores: self.limit_override.or(reading.limit_cores),
            ..reading
        }
    }
}

/// The agent's own footprint, for `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessUsage {
    pub rss_bytes: u64,
    /// CPU used since the previous sample, in cores.
    pub cpu_cores: f64,
}

/// Samples the agent's own [`ProcessUsage`].
pub struct SelfProbe {
    sys: sysinfo::System,
    pid: Option<sysinfo::Pid>,
}

impl Default for SelfProbe {
    fn default() -> Self {
        SelfProbe {
            sys: sysinfo::System::new(),
            pid: sysinfo::get_current_pid().ok(),
        }
    }
}

impl SelfProbe {
    /// `None` when the process cannot be read; CPU is measured since the previous call.
    pub fn sample(&mut self) -> Option<ProcessUsage> {
        let pid = self.pid?;
        self.sys.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&[pid]),
            true,
            sysinfo::ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory(),
        );
        let p = self.sys.process(pid)?;
        Some(ProcessUsage {
            rss_bytes: p.memory(),
            cpu_cores: p.cpu_usage() as f64 / 100.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_parsing() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("50000 100000"), Some(0.5));
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cpu_max("100 0"), None);
        let stat = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n";
        assert_eq!(parse_cpu_stat_usage(stat), Some(2.5));
        assert_eq!(parse_cpu_stat_usage("user_usec 1\n"), None);
    }

    #[test]
    fn cgroup_v1_parsing() {
        assert_eq!(parse_v1_limit("-1\n", "100000\n"), None);
        assert_eq!(parse_v1_limit("150000\n", "100000\n"), Some(1.5));
        assert_eq!(parse_v1_limit("x", "100000"), None);
        assert_eq!(parse_v1_usage("3000000000\n"), Some(3.0));
    }

    #[test]
    fn usage_from_counters() {
        assert_eq!(cores_used(1.0, 3.0, 2.0), Some(1.0));
        assert_eq!(cores_used(3.0, 1.0, 2.0), None, "counter reset");
        assert_eq!(cores_used(1.0, 2.0, 0.0), None);
        assert_eq!(cores_used(1.0, 2.0, f64::NAN), None);
    }

    #[test]
    fn probe_reads_a_v2_directory() {
        let dir = std::env::temp_dir().join(format!("lb-cg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.max"), "150000 100000\n").unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1000000\n").unwrap();
        let mut p = CpuProbe::new(&dir, None);
        let r = p.sample();
        assert_eq!(r.source, Source::CgroupV2);
        assert_eq!(r.limit_cores, Some(1.5));
        assert_eq!(r.used_cores, None, "first reading has no usage yet");
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1001000\n").unwrap();
        let r = p.sample();
        assert!(r.used_cores.is_some_and(|u| u > 0.0));
        let mut p = CpuProbe::new(&dir, Some(4.0));
        assert_eq!(p.sample().limit_cores, Some(4.0), "override wins");
        let _ = std::fs::remove_dir_all(&dir);
        // A directory that is not a cgroup falls back to the host.
        let mut p = CpuProbe::new("/nonexistent-cgroup", None);
        let r = p.sample();
        assert_eq!(r.source, Source::Host);
        assert!(r.limit_cores.is_some_and(|l| l >= 1.0));
    }
}
