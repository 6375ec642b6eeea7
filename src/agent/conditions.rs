//! Node conditions as taints, the way Kubernetes' node lifecycle controller turns kubelet's
//! conditions into taints (`pkg/controller/nodelifecycle`, `doNoScheduleTaintingPass`):
//!
//! | condition | taint | signal | default threshold |
//! |---|---|---|---|
//! | MemoryPressure | `node.kubernetes.io/memory-pressure:NoSchedule` | `MemAvailable` in `/proc/meminfo`; optionally PSI `some avg10` in `/proc/pressure/memory` | `MemAvailable` < 100Mi (kubelet's `evictionHard` `memory.available<100Mi`); PSI off |
//! | DiskPressure | `node.kubernetes.io/disk-pressure:NoSchedule` | `statvfs(2)` of [`Thresholds::disk_path`] (default `/`): available = `f_bavail × f_frsize`, capacity = `f_blocks × f_frsize` | available < 10 % of capacity (kubelet's `nodefs.available<10%`) |
//!
//! Rules:
//! - A threshold is met when the observed value is strictly below it (kubelet's
//!   `thresholdsMet`: `threshold > available`), or, for PSI, strictly above it.
//! - `memory.available` is `MemAvailable` (the kernel's estimate of memory available without
//!   swapping). kubelet measures working sets through cgroups instead; on a plain host
//!   `MemAvailable` is the honest equivalent. Kernels before 3.14 have no `MemAvailable`:
//!   `MemFree + Buffers + Cached` stands in. A percentage threshold (`"10%"`) is of
//!   `MemTotal`.
//! - Memory pressure from PSI only counts when a PSI threshold is configured and the kernel
//!   has `/proc/pressure/memory` (Linux 4.20+, `psi=1`): then `some avg10` (the share of the
//!   last 10 s in which some task stalled on memory, in percent) above the threshold is
//!   pressure too, even with enough `MemAvailable`.
//! - A signal that cannot be read (no `/proc`, a `disk_path` that does not exist) is no
//!   pressure: tainting a node because the agent cannot see is worse than not tainting it.
//!   [`observe`] reports such problems so they can be logged.
//! - **Hysteresis**: [`PressureTracker`] keeps a condition for
//!   [`Thresholds::transition_period`] (default 5 minutes, kubelet's
//!   `--eviction-pressure-transition-period`) after it was last observed, so a value
//!   hovering around a threshold does not flap the taint (kubelet's
//!   `nodeConditionsObservedSince`). [`sample`] is a single stateless observation.
//!
//! Daemonsets tolerate both taints automatically (`AddOrUpdateDaemonPodTolerations`), so
//! they hold back only daemonsets whose placement is evaluated without those tolerations —
//! and they show in `hostset eval` what the node looks like, as Kubernetes does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::placement::taints::{
    EFFECT_NO_SCHEDULE, TAINT_NODE_DISK_PRESSURE, TAINT_NODE_MEMORY_PRESSURE,
};
use crate::spec::Taint;

/// 100Mi, kubelet's default hard eviction threshold for `memory.available`.
pub const DEFAULT_MEMORY_AVAILABLE: u64 = 100 * 1024 * 1024;
/// kubelet's default hard eviction threshold for `nodefs.available`, in percent.
pub const DEFAULT_DISK_AVAILABLE_PERCENT: f64 = 10.0;
/// kubelet's default `--eviction-pressure-transition-period`.
pub const DEFAULT_TRANSITION_PERIOD: Duration = Duration::from_secs(300);

/// The memory threshold: an amount or a share of `MemTotal`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryThreshold {
    /// Pressure when `MemAvailable` is below this many bytes.
    Bytes(u64),
    /// Pressure when `MemAvailable` is below this percentage of `MemTotal`.
    Percent(f64),
}

/// When a condition is met. See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Memory pressure below this `MemAvailable`; default 100Mi.
    pub memory_available: MemoryThreshold,
    /// Memory pressure when PSI `some avg10` exceeds this percentage; `None` (default): PSI
    /// is not consulted.
    pub memory_psi_some_avg10: Option<f64>,
    /// Disk pressure below this percentage of free space on [`Thresholds::disk_path`];
    /// default 10.
    pub disk_available_percent: f64,
    /// The file system watched for disk pressure; default `/`.
    pub disk_path: PathBuf,
    /// How long a condition outlives its last observation ([`PressureTracker`]).
    pub transition_period: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            memory_available: MemoryThreshold::Bytes(DEFAULT_MEMORY_AVAILABLE),
            memory_psi_some_avg10: None,
            disk_available_percent: DEFAULT_DISK_AVAILABLE_PERCENT,
            disk_path: PathBuf::from("/"),
            transition_period: DEFAULT_TRANSITION_PERIOD,
        }
    }
}

/// Which conditions hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
}

/// A file system's size, as `statvfs(2)` reports it to unprivileged users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    /// `f_blocks × f_frsize`.
    pub capacity_bytes: u64,
    /// `f_bavail × f_frsize`: free space available to unprivileged users.
    pub available_bytes: u64,
}

/// The `key: value kB` lines of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(meminfo: &str) -> BTreeMap<&str, u64> {
    let mut out = BTreeMap::new();
    for line in meminfo.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(Ok(n)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = match words.next() {
            Some("kB") => n.saturating_mul(1024),
            None => n,
            Some(_) => continue,
        };
        out.insert(key.trim(), bytes);
    }
    out
}

/// `MemAvailable` in bytes, or `MemFree + Buffers + Cached` on kernels without it.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let fields = parse_meminfo(meminfo);
    if let Some(v) = fields.get("MemAvailable") {
        return Some(*v);
    }
    let free = *fields.get("MemFree")?;
    let buffers = fields.get("Buffers").copied().unwrap_or(0);
    let cached = fields.get("Cached").copied().unwrap_or(0);
    Some(free.saturating_add(buffers).saturating_add(cached))
}

/// `some avg10` of a PSI file (`/proc/pressure/memory`): a percentage.
pub fn psi_some_avg10(psi: &str) -> Option<f64> {
    let line = psi.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("avg10="))?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

/// Memory pressure from the text of `/proc/meminfo` and, when the kernel has it, of
/// `/proc/pressure/memory`. Unreadable input is no pressure.
pub fn memory_pressure(meminfo: &str, psi: Option<&str>, t: &Thresholds) -> bool {
    let by_available = mem_available(meminfo).is_some_and(|available| {
        let threshold = match t.memory_available {
            MemoryThreshold::Bytes(b) => b as f64,
            MemoryThreshold::Percent(p) => match parse_meminfo(meminfo).get("MemTotal") {
                Some(total) => *total as f64 * p / 100.0,
                None => return false,
            },
        };
        (available as f64) < threshold
    });
    let by_psi = match (t.memory_psi_some_avg10, psi.and_then(psi_some_avg10)) {
        (Some(limit), Some(avg10)) => avg10 > limit,
        _ => false,
    };
    by_available || by_psi
}

/// Disk pressure: available space below [`Thresholds::disk_available_percent`] of the
/// capacity. An empty file system (capacity 0, e.g. a pseudo file system) is no pressure.
pub fn disk_pressure(fs: &FsStats, t: &Thresholds) -> bool {
    fs.capacity_bytes > 0
        && (fs.available_bytes as f64) < fs.capacity_bytes as f64 * t.disk_available_percent / 100.0
}

/// The taints for the conditions that hold, memory first.
pub fn taints(p: Pressure) -> Vec<Taint> {
    let taint = |key: &str| Taint {
        key: key.to_string(),
        value: String::new(),
        effect: EFFECT_NO_SCHEDULE.to_string(),
    };
    let mut out = Vec::new();
    if p.memory {
        out.push(taint(TAINT_NODE_MEMORY_PRESSURE));
    }
    if p.disk {
        out.push(taint(TAINT_NODE_DISK_PRESSURE));
    }
    out
}

/// `statvfs(2)` of `path`.
pub fn fs_stats(path: &Path) -> std::io::Result<FsStats> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let unit = match st.fragment_size() {
        0 => st.block_size(),
        f => f,
    } as u64;
    Ok(FsStats {
        capacity_bytes: (st.blocks() as u64).saturating_mul(unit),
        available_bytes: (st.blocks_available() as u64).saturating_mul(unit),
    })
}

/// One look at the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub pressure: Pressure,
    /// Signals that could not be read (each counted as no pressure), for the log.
    pub problems: Vec<String>,
}

/// Read `/proc/meminfo`, `/proc/pressure/memory` (when a PSI threshold is set and the file
/// exists) and `statvfs` of the disk path, and evaluate them.
pub fn observe(t: &Thresholds) -> Observation {
    let mut problems = Vec::new();
    let memory = match std::fs::read_to_string("/proc/meminfo") {
        Ok(meminfo) => {
            let psi = t
                .memory_psi_some_avg10
                .and_then(|_| std::fs::read_to_string("/proc/pressure/memory").ok());
            if mem_available(&meminfo).is_none() {
                problems.push("/proc/meminfo has no MemAvailable nor MemFree".to_string());
            }
            memory_pressure(&meminfo, psi.as_deref(), t)
        }
        Err(e) => {
            problems.push(format!("cannot read /proc/meminfo: {e}"));
            false
        }
    };
    let disk = match fs_stats(&t.disk_path) {
        Ok(fs) => disk_pressure(&fs, t),
        Err(e) => {
            problems.push(format!("cannot statvfs {}: {e}", t.disk_path.display()));
            false
        }
    };
    Observation {
        pressure: Pressure { memory, disk },
        problems,
    }
}

/// The condition taints of this host right now (no hysteresis; see [`PressureTracker`]).
pub fn sample(t: &Thresholds) -> Vec<Taint> {
    taints(observe(t).pressure)
}

/// Hysteresis: a condition holds while it was observed within the transition period
/// (kubelet's `nodeConditionsObservedSince`).
#[derive(Debug, Clone)]
pub struct PressureTracker {
    period: Duration,
    memory_seen: Option<Instant>,
    disk_seen: Option<Instant>,
}

impl PressureTracker {
    /// A tracker keeping conditions for `period` after their last observation.
    pub fn new(period: Duration) -> PressureTracker {
        PressureTracker {
            period,
            memory_seen: None,
            disk_seen: None,
        }
    }

    /// Record an observation made at `now` and return the conditions in force.
    pub fn update(&mut self, now: Instant, observed: Pressure) -> Pressure {
        let period = self.period;
        let step = |seen: &mut Option<Instant>, now_observed: bool| {
            if now_observed {
                *seen = Some(now);
                return true;
            }
            seen.is_some_and(|at| now.saturating_duration_since(at) < period)
        };
        Pressure {
            memory: step(&mut self.memory_seen, observed.memory),
            disk: step(&mut self.disk_seen, observed.disk),
        }
    }
}
