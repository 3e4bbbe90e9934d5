//! Host facts (sent at registration) and stats (sent with each heartbeat),
//! from sysinfo.

use std::collections::BTreeMap;

use sysinfo::System;
use ultron8_core::{DroneFacts, HostStats};

pub fn collect_facts(labels: BTreeMap<String, String>) -> DroneFacts {
    let mut system = System::new();
    system.refresh_memory();
    system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    DroneFacts {
        hostname: System::host_name().unwrap_or_default(),
        os: System::name().unwrap_or_else(|| std::env::consts::OS.to_string()),
        os_version: System::os_version().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        arch: System::cpu_arch(),
        cpus: system.cpus().len() as u32,
        memory_bytes: system.total_memory(),
        labels,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Keeps the sysinfo state between samples: CPU usage is the difference
/// between two refreshes, so the first sample after start reads zero.
pub struct StatsSampler {
    system: System,
}

impl StatsSampler {
    pub fn new() -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        StatsSampler { system }
    }

    pub fn sample(&mut self) -> HostStats {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let load = System::load_average();
        let memory_percent = percent(self.system.used_memory(), self.system.total_memory());
        HostStats {
            cpu_percent: self.system.global_cpu_usage(),
            memory_percent,
            disk_percent: self.root_disk_percent(),
            load1: load.one,
            load5: load.five,
            load15: load.fifteen,
            uptime_seconds: System::uptime(),
            collected_at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// Usage of the file system holding `/`, the one whose filling up
    /// takes a host down, as `df` computes it (see [`df_percent`]).
    fn root_disk_percent(&self) -> f32 {
        root_disk_percent().unwrap_or(0.0)
    }
}

/// Usage of the file system holding `/`, from `statvfs(2)`.
pub fn root_disk_percent() -> Option<f32> {
    let stat = nix::sys::statvfs::statvfs("/").ok()?;
    Some(df_percent(
        stat.blocks() as u64,
        stat.blocks_free() as u64,
        stat.blocks_available() as u64,
    ))
}

/// Percent used as `df` reports it: used / (used + available to users).
/// Blocks reserved for root (free but not available) are in neither, so a
/// file system is 100 % full when users cannot write, not when root cannot;
/// counting them as used would make a disk-full rule fire early.
pub fn df_percent(blocks: u64, free: u64, available: u64) -> f32 {
    let used = blocks.saturating_sub(free);
    percent(used, used + available)
}

impl Default for StatsSampler {
    fn default() -> Self {
        StatsSampler::new()
    }
}

fn percent(part: u64, whole: u64) -> f32 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 100.0 / whole as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_blocks_count_neither_as_used_nor_as_available() {
        // 1000 blocks, 200 free of which 150 available (50 reserved).
        assert_eq!(df_percent(1000, 200, 150), 80.0 * 100.0 / 95.0);
        assert_eq!(df_percent(1000, 1000, 950), 0.0);
        assert_eq!(df_percent(0, 0, 0), 0.0);
        // Users cannot write: 100 %, although root still could.
        assert_eq!(df_percent(1000, 50, 0), 100.0);
    }

    #[test]
    fn the_root_figure_matches_df() {
        let ours = root_disk_percent().expect("statvfs /");
        let df = std::process::Command::new("df")
            .args(["--output=pcent", "/"])
            .output()
            .expect("run df");
        let text = String::from_utf8_lossy(&df.stdout);
        let theirs: f32 = text
            .lines()
            .nth(1)
            .and_then(|l| l.trim().trim_end_matches('%').parse().ok())
            .expect("df's percentage");
        // df rounds up to a whole percent; the disk may change in between.
        assert!((ours - theirs).abs() <= 1.5, "ours {ours}, df {theirs}");
    }
}
